"""`hivegen doctor`: check every invariant of the hive; `--repair` what is safe to.

A repair never deletes an agent's repos, credentials or notes: it finishes or undoes an
interrupted approve, re-syncs the meta flake, rewrites confs and drop-ins, and chmods.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from hivegen import gitlocks, hostcheck, nspawn, registry, safepath
from hivegen import meta as meta_mod
from hivegen.findings import Check, Finding, Report, Severity
from hivegen.hive import Hive
from hivegen.names import AGENT_PREFIX, AgentSpec
from hivegen.proposals import Proposals
from hivegen.render import LIMITS_DROPIN, render_limits_dropin
from hivegen.repocheck import RepoChecks
from hivegen.store import Proposal, ProposalStatus

MAIN = "refs/heads/main"


class Doctor:
    def __init__(self, hive: Hive) -> None:
        self.hive = hive
        self.config = hive.config
        self.layout = hive.layout
        self.proposals = Proposals(hive)
        self.repo_checks = RepoChecks(hive, self.proposals)
        self._unsafe_agents: set[str] = set()

    def run(self, *, repair: bool = False) -> Report:
        if not repair:
            return Report(tuple(self.diagnose()))
        done: list[str] = []
        with self.hive.locked():
            # Rounds, because one repair can reveal the next (an undone approve leaves
            # the meta flake to re-check); each round fixes what it can see.
            for _ in range(4):
                fixable = [f for f in self.diagnose() if f.repair is not None]
                if not fixable:
                    break
                for finding in fixable:
                    assert finding.repair is not None
                    done.append(finding.repair())
        return Report(tuple(self.diagnose()), tuple(done))

    # -- checks -------------------------------------------------------------------------

    def diagnose(self) -> list[Finding]:
        store = self.proposals.store
        damage = store.damage()
        if damage is not None:
            # Every check below reads the index: this one comes first, alone.

            def move_aside() -> str:
                kept = store.move_aside()
                return (
                    f"{store.path} moved aside to {kept.name}; the index is rebuilt from the tags"
                )

            return [
                Finding(
                    Check.INDEX,
                    None,
                    damage.message,
                    hint="--repair moves it aside (it is kept, never deleted) and rebuilds "
                    "the index from the applied repos' tags",
                    repair=move_aside,
                )
            ]
        findings: list[Finding] = hostcheck.nix_findings()
        scan = registry.scan(self.config)
        # First: a stale lock makes every later git in that repo fail, repairs included.
        findings += self._git_locks(scan.registered + scan.tombstones)
        paths = hostcheck.path_findings(self.hive, scan.registered + scan.tombstones)
        findings += paths
        # An agent with an unsafe path gets no conf repair: the bind check would refuse it.
        self._unsafe_agents = {f.agent for f in paths if f.agent is not None and f.repair is None}
        # Read once: approves that were interrupted (their agents' repos are mid-change).
        building = self.proposals.store.in_status(ProposalStatus.BUILDING)
        findings += self._interrupted_approves(building)
        building_agents = {p.agent for p in building}
        indexed = self.proposals.store.ids()
        for name in (*scan.registered, *scan.tombstones):
            findings += self.repo_checks.repos(name, busy=name in building_agents)
            findings += self.repo_checks.orphan_tags(name, indexed)
        if not any(f.check is Check.INTERRUPTED_APPROVE for f in findings):
            # A main that is no known deploy is never locked in: the operator decides.
            doubt = {f.agent for f in findings if f.check is Check.APPLIED_MAIN and not f.repair}
            findings += self._meta(scan.registered, doubt)
        findings += self._containers(scan.registered, scan.tombstones)
        findings += self._credentials(scan.registered + scan.tombstones)
        findings += self._ports(scan.registered)
        findings += self._leftovers()
        findings += self._rollout()
        return findings

    def _rollout(self) -> list[Finding]:
        from hivegen.rollout import Phase, read_record

        record = read_record(self.hive)
        if record is None:
            return []
        agents = record.get("agents", {})
        phases = {n: str(e.get("phase")) for n, e in agents.items() if isinstance(e, dict)}
        known = {n: Phase(p) for n, p in phases.items() if p in set(Phase)}
        done = [n for n, p in known.items() if p.done]
        caught = sorted(n for n, p in known.items() if p is Phase.ACTIVATING)
        commit = str(record.get("meta_commit", "?"))[:12]
        message = (
            f"a rollout of meta {commit} was interrupted: {len(done)} of {len(phases)} agents done"
        )
        if caught:
            message += f"; caught mid-switch (not checked yet): {', '.join(caught)}"
        return [
            Finding(
                Check.ROLLOUT,
                None,
                message,
                hint="run the same hivegen rollout again: it skips the agents done and checks "
                "those caught mid-switch",
            )
        ]

    def _interrupted_approves(self, building: list[Proposal]) -> list[Finding]:
        found = []
        for proposal in building:

            def fix(p: Proposal = proposal) -> str:
                result = self.proposals.recover(p)
                return (
                    f"proposal {p.id} ({p.agent}): interrupted approve settled as {result.status}"
                )

            found.append(
                Finding(
                    Check.INTERRUPTED_APPROVE,
                    proposal.agent,
                    f"proposal {proposal.id} was being built when its approve was interrupted",
                    hint=f"hivegen approve {proposal.id} finishes it",
                    repair=fix,
                )
            )
        return found

    def _git_locks(self, names: tuple[str, ...]) -> list[Finding]:
        git_dirs = [self.layout.meta / ".git", *(self.layout.applied(n) / ".git" for n in names)]
        found = []
        for lock in gitlocks.survey(git_dirs):
            if lock.holders:
                who = ", ".join(f"pid {pid} ({comm})" for pid, comm in lock.holders)
                found.append(
                    Finding(
                        Check.GIT_LOCK,
                        None,
                        f"{lock.path} is held by {who}",
                        hint="a git is working there: let it finish, then run the command again",
                        severity=Severity.NOTE,
                    )
                )
                continue

            def remove(path: Path = lock.path) -> str:
                if gitlocks.remove_if_stale(path):
                    return f"removed stale git lock {path}"
                return f"left {path}: it is in use again"

            stale = lock.age >= gitlocks.SAFE_AGE
            found.append(
                Finding(
                    Check.GIT_LOCK,
                    None,
                    f"{lock.path} is a git lock no process holds ({lock.age:.0f}s old): "
                    "every git that needs it fails until it is removed",
                    hint=None
                    if stale
                    else f"--repair removes it once it is {gitlocks.SAFE_AGE:.0f}s old "
                    "(a git may have just taken it); or remove it by hand",
                    repair=remove if stale else None,
                )
            )
        return found

    def _meta(self, registered: tuple[str, ...], main_in_doubt: set[str | None]) -> list[Finding]:
        damaged = self.repo_checks.integrity(self.layout.meta, Check.META, None)
        if damaged:
            return damaged
        meta = self.hive.meta
        plan = meta.plan()[0]
        found = []
        if plan.needed:

            def sync() -> str:
                result = meta.sync()
                done = f"committed {result.commit[:12]}" if result.commit else "no change"
                return f"meta flake re-synced ({done})"

            found.append(
                Finding(
                    Check.META,
                    None,
                    "meta flake out of date: " + "; ".join(plan.describe()),
                    repair=sync,
                )
            )
            return found
        lock = meta_mod.read_lock(self.layout.meta)
        for name in registered:
            locked = meta_mod.locked_node(lock, meta_mod.input_name(name)).get("rev")
            main = registry.read_ref(self.layout.applied(name) / ".git", MAIN)
            if main is not None and locked != main:

                def bump(n: str = name) -> str:
                    meta.lock_update(n)
                    return f"{n}: meta lock bumped to its applied main"

                found.append(
                    Finding(
                        Check.META_LOCK,
                        name,
                        f"meta locks agent-{name} at {(locked or '-')[:12]}, its applied main is "
                        f"{main[:12]}",
                        hint=f"hivegen rebuild {name} also rebuilds the container"
                        if name not in main_in_doubt
                        else "not bumped while its applied main is in doubt (see above)",
                        repair=None if name in main_in_doubt else bump,
                    )
                )
        return found

    def _containers(
        self, registered: tuple[str, ...], tombstones: tuple[str, ...]
    ) -> list[Finding]:
        found = []
        host = self.hive.host
        existing = set(host.conf_names())
        found += hostcheck.unit_findings(
            self.hive,
            [self.hive.spec(n) for n in registered if self.hive.spec(n).container in existing],
        )
        for name in registered:
            spec = self.hive.spec(name)
            if spec.container not in existing:
                found.append(
                    Finding(
                        Check.CONTAINER,
                        name,
                        f"container {spec.container} does not exist",
                        hint=f"hivegen spawn {name} creates it; hivegen destroy {name} retires it",
                    )
                )
                continue
            if self.hive.restart_pending(spec):

                def finish(s: AgentSpec = spec) -> str:
                    self.hive.finish_restart(s)
                    return f"{s.name}: interrupted restart finished"

                found.append(
                    Finding(
                        Check.RESTART,
                        name,
                        f"a restart of {spec.container} was interrupted",
                        repair=None if name in self._unsafe_agents else finish,
                    )
                )
            path = nspawn.conf_path(self.config, spec.container)
            text = path.read_text()
            wanted = nspawn.rewrite_conf(text, nspawn.extra_nspawn_flags(self.config, spec))
            if text != wanted:

                def write_conf(s: AgentSpec = spec) -> str:
                    nspawn.write_conf(self.config, s)
                    return f"{s.name}: nspawn flags rewritten (restart {s.name} to apply them)"

                unsafe = name in self._unsafe_agents
                found.append(
                    Finding(
                        Check.CONF,
                        name,
                        f"{path} lacks hivegen's nspawn flags",
                        hint="not rewritten while a bind source of it is unsafe (see above)"
                        if unsafe
                        else None,
                        repair=None if unsafe else write_conf,
                    )
                )
            dropin = nspawn.dropin_dir(self.config, spec.container) / LIMITS_DROPIN
            expected = render_limits_dropin(self.config.limits_for(name))
            current = dropin.read_text() if dropin.is_file() else None
            if (
                current != expected
                or nspawn.reload_pending(self.config, spec.container)
                or nspawn.has_legacy_dropin(self.config, spec.container)
            ):

                def write_dropin(s: AgentSpec = spec) -> str:
                    nspawn.write_dropin(self.config, s)
                    self.hive.reload_systemd(s.container)
                    return f"{s.name}: limits drop-in rewritten and loaded"

                found.append(
                    Finding(
                        Check.DROPIN,
                        name,
                        f"{dropin} is missing, stale or not loaded",
                        repair=write_dropin,
                    )
                )
            for path in nspawn.overriding_dropins(host.other_dropin_roots(), spec.container):
                found.append(
                    Finding(
                        Check.DROPIN,
                        name,
                        f"{path} sets a limit and sorts after hivegen's {LIMITS_DROPIN}: "
                        f"it overrides {name}'s limits",
                        hint=f"remove it (hivegen never deletes another program's files), then "
                        f"systemctl daemon-reload && hivegen restart {name}",
                    )
                )
        for name in tombstones:
            spec = self.hive.spec(name)
            directory = nspawn.dropin_dir(self.config, spec.container)
            if spec.container in existing:
                found.append(
                    Finding(
                        Check.CONTAINER,
                        name,
                        f"{name} is destroyed, but container {spec.container} still exists",
                        hint=f"hivegen destroy {name} finishes the destroy",
                    )
                )
            elif (directory / LIMITS_DROPIN).exists() or nspawn.reload_pending(
                self.config, spec.container
            ):

                def drop(s: AgentSpec = spec) -> str:
                    nspawn.remove_dropin(self.config, s.container)
                    self.hive.reload_systemd(s.container)
                    return f"{s.name}: leftover limits drop-in removed"

                found.append(
                    Finding(
                        Check.DROPIN,
                        name,
                        f"destroyed agent {name} still has a limits drop-in",
                        repair=drop,
                    )
                )
        known = {self.hive.spec(n).container for n in (*registered, *tombstones)}
        for container in sorted(existing):
            if container.startswith(AGENT_PREFIX) and container not in known:
                found.append(
                    Finding(
                        Check.FOREIGN,
                        None,
                        f"container {container} was not created by hivegen; left alone",
                        severity=Severity.NOTE,
                    )
                )
        return found

    def _credentials(self, names: tuple[str, ...]) -> list[Finding]:
        found = []
        root = self.layout.root
        for rel in ("credentials", *(f"credentials/{n}" for n in names)):
            path = root / rel
            if not path.is_dir() or safepath.survey(root, rel) is not None:
                continue  # missing, or unsafe (the paths check reports it): never chmod'ed
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode != 0o700:

                def chmod(r: str = rel, p: Path = path, m: int = mode) -> str:
                    safepath.check_dir(root, r, create_mode=0o700, enforce_mode=True)
                    return f"{p}: mode {m:o} -> 700"

                found.append(
                    Finding(
                        Check.CREDENTIALS_MODE,
                        path.name,
                        f"{path} has mode {mode:o}, not 700",
                        repair=chmod,
                    )
                )
        return found

    def _ports(self, registered: tuple[str, ...]) -> list[Finding]:
        by_port: dict[int, list[str]] = {}
        for name in registered:
            by_port.setdefault(self.hive.spec(name).port, []).append(name)
        return [
            Finding(
                Check.PORT_CLASH,
                None,
                f"port {port} is shared by {', '.join(names)}",
                hint="rename one of them",
            )
            for port, names in sorted(by_port.items())
            if len(names) > 1
        ]

    def _leftovers(self) -> list[Finding]:
        found: list[Finding] = []
        root = self.layout.applied_root
        # Private work dirs of hivegen's own (root-only parents), left by a killed run.
        left = sorted(root.glob(".seeding-*")) if root.is_dir() else []
        left += sorted(
            p
            for pattern in (".hivegen-seed-*", ".hivegen-snapshot-*", ".hivegen-config-*")
            for p in self.layout.root.glob(pattern)
            if p.is_dir() and not p.is_symlink()
        )
        for staging in left:

            def remove(p: Path = staging) -> str:
                shutil.rmtree(p)
                return f"removed {p}, left by an interrupted run (never published)"

            found.append(
                Finding(
                    Check.LEFTOVER,
                    _leftover_agent(staging.name),
                    f"{staging} is left from an interrupted run",
                    repair=remove,
                )
            )
        return found


def _leftover_agent(name: str) -> str | None:
    for prefix in (".seeding-", ".hivegen-seed-"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return None  # a snapshot or config copy: not one agent's
