"""The verbs. Every mutating one runs under the hive lock; none prints.

Each multi-step verb is written so that re-running it after a failure at any step
completes it: every step checks what is already done.

What a verb alone needs is imported by that verb: a Hive made for `status` (or any
read) loads neither the lifecycle's modules nor the process gateway until it runs one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from hivegen import desired, fsutil, registry
from hivegen.desired import Desired
from hivegen.errors import HivegenError, UsageError

if TYPE_CHECKING:
    from hivegen import status as status_mod
    from hivegen.config import Config
    from hivegen.containers import Host, UnitState
    from hivegen.git import Git
    from hivegen.meta import Meta, SyncPlan, SyncResult, UpdateResult
    from hivegen.names import AgentSpec


@dataclass(frozen=True, slots=True)
class LockPolicy:
    wait: bool = True
    # Called once, with who holds it, if the lock is held by another hivegen and this
    # one starts waiting.
    on_wait: Callable[[str], None] | None = None
    # What this process is doing, written into the lock for others to show.
    holder: str = ""


@dataclass(frozen=True, slots=True)
class InitResult:
    created: tuple[Path, ...]
    fixed_modes: tuple[Path, ...]
    migrated_notes: tuple[str, ...] = ()


# In an agent's applied .git while its container is between the stop and the start of a
# restart: an interrupted restart must not leave a running agent stopped.
RESTART_PENDING = "hivegen-restart-pending"


@dataclass(frozen=True, slots=True)
class _PurgeTarget:
    root: Path
    parent: PurePosixPath
    name: str

    @property
    def path(self) -> Path:
        return self.root.joinpath(*self.parent.parts, self.name)


@dataclass(frozen=True, slots=True)
class StepLog:
    """What a verb did, step by step, for the CLI to show."""

    steps: tuple[str, ...]


class Hive:
    def __init__(
        self,
        config: Config,
        lock_policy: LockPolicy | None = None,
        on_output: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.layout = config.layout
        self.lock_policy = lock_policy or LockPolicy()
        self.on_output = on_output
        self._host: Host | None = None
        self._lock_held = False

    @cached_property
    def git(self) -> Git:
        from hivegen.repos import git_for

        return git_for(self.config)

    @cached_property
    def meta(self) -> Meta:
        from hivegen.meta import Meta

        return Meta(self.config, self.git)

    @property
    def host(self) -> Host:
        if self._host is None:
            from hivegen.containers import Host

            self._host = Host(self.config, self.on_output)
        return self._host

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the hive lock. Re-entrant within this Hive, so that a verb made of
        others (reconcile) holds it once, start to end."""
        if self._lock_held:
            yield
            return
        fsutil.ensure_dir(self.layout.root, 0o755)
        with fsutil.hive_lock(
            self.layout.lock,
            wait=self.lock_policy.wait,
            on_wait=self.lock_policy.on_wait,
            holder=self.lock_policy.holder,
        ):
            self._lock_held = True
            try:
                yield
            finally:
                self._lock_held = False

    # -- init and meta ------------------------------------------------------------------

    def init(self) -> InitResult:
        """Create the state root layout and migrate old notes; idempotent. Credentials
        are always 0700. Nothing is created or moved through a symlink."""
        from hivegen import safepath
        from hivegen.layout import TOP_DIRS

        layout = self.layout
        created: list[Path] = []
        fixed: list[Path] = []
        migrated: list[str] = []
        with self.locked():
            for rel, mode in TOP_DIRS:
                enforce = mode == 0o700  # a private dir is forced back to its mode
                path = layout.root / rel
                before = path.lstat().st_mode & 0o7777 if path.is_dir() else None
                safepath.check_dir(layout.root, rel, create_mode=mode, enforce_mode=enforce)
                if before is None:
                    created.append(path)
                elif before != mode and enforce:
                    fixed.append(path)
            for name in registry.registered_agents(self.config):
                if self.migrate_notes(self.spec(name)):
                    migrated.append(name)
        return InitResult(tuple(created), tuple(fixed), tuple(migrated))

    def migrate_notes(self, spec: AgentSpec) -> bool:
        """Move old `agents/<n>/state` notes to `notes/<n>` (notes.py); True if moved.

        The conf is rewritten at once: a later `nixos-container start` that hivegen
        does not drive must not bind the old path (which the manager could now plant).
        A running container keeps its mount: the directory only changed name.
        """
        from hivegen import notes, nspawn

        if not notes.migrate(self.layout, spec.name):
            return False
        if self.host.conf_exists(spec.container):
            nspawn.write_conf(self.config, spec)
        return True

    def meta_plan(self) -> SyncPlan:
        """What `meta sync` would do; starts no process and takes no lock."""
        return self.meta.plan()[0]

    def meta_sync(self) -> SyncResult:
        # A no-op needs neither the lock nor a process; only a real sync waits for the lock.
        plan = self.meta_plan()
        if not plan.needed:
            from hivegen.meta import SyncResult

            return SyncResult(plan)
        with self.locked():
            return self.meta.sync()

    def meta_update(self, inputs: Sequence[str]) -> UpdateResult:
        with self.locked():
            return self.meta.update(inputs)

    # -- helpers ------------------------------------------------------------------------

    def spec(self, name: str) -> AgentSpec:
        return self.config.agent(name)

    def registered(self, name: str) -> AgentSpec:
        spec = self.spec(name)
        scan = registry.scan(self.config)
        if name in scan.tombstones:
            raise HivegenError(
                f"agent {name!r} was destroyed (its repos and notes are kept)",
                hint=f"hivegen spawn {name} revives it",
            )
        if name not in scan.registered:
            raise unknown_agent(name, scan)
        return spec

    def _port_taken_by(self, spec: AgentSpec, *, running_only: bool) -> str | None:
        others = [self.spec(n) for n in registry.registered_agents(self.config) if n != spec.name]
        clashing = [o for o in others if o.port == spec.port]
        if not clashing:
            return None
        if not running_only:
            return clashing[0].name
        states = self.host.unit_states(o.container for o in clashing)
        for other in clashing:
            if states[other.container].running:
                return other.name
        return None

    def check_port(self, spec: AgentSpec, *, running_only: bool) -> None:
        other = self._port_taken_by(spec, running_only=running_only)
        if other is not None:
            raise HivegenError(
                f"port {spec.port} is already taken by {other!r} — rename one of them and retry"
            )

    def _ensure_dirs(self, spec: AgentSpec) -> None:
        """Every bind source made if missing and checked (nspawn.verify_binds), old
        notes migrated first so that they are never hidden behind a new empty dir."""
        from hivegen import nspawn, safepath

        root = self.layout.root
        self.migrate_notes(spec)
        # Enforced even when it exists: credentials are never readable by others.
        safepath.check_dir(root, "credentials", create_mode=0o700, enforce_mode=True)
        safepath.check_dir(root, "meta", create_mode=0o755)
        nspawn.verify_binds(self.config, spec, create=True)

    def write_host_files(self, spec: AgentSpec) -> bool:
        """Conf and drop-in; daemon-reload when the drop-in changed. True if any changed."""
        from hivegen import nspawn

        conf_changed = nspawn.write_conf(self.config, spec)
        dropin_changed = nspawn.write_dropin(self.config, spec)
        if dropin_changed:
            self.reload_systemd(spec.container)
        return conf_changed or dropin_changed

    def reload_systemd(self, container: str) -> None:
        """`systemctl daemon-reload`, then clear the container's reload-pending mark."""
        from hivegen import nspawn

        self.host.daemon_reload()
        nspawn.reloaded(self.config, container)

    def apply_host_files(self, spec: AgentSpec) -> list[str]:
        """Conf and drop-in up to date; a running container restarted if they changed."""
        if not self.write_host_files(spec):
            return []
        steps = ["nspawn flags or limits changed"]
        if self.host.unit_state(spec.container).running:
            self.restart_container(spec)
            steps.append(f"restarted {spec.container} to apply them")
        return steps

    def _system_record(self, spec: AgentSpec) -> Path:
        return self.layout.applied(spec.name) / ".git" / registry.SYSTEM_RECORD

    def record_system(self, spec: AgentSpec) -> None:
        """Note which system the container was given, and for which deploy: doctor
        compares it with the container's profile without evaluating Nix."""
        from hivegen import builtfrom
        from hivegen.meta import read_lock

        system = self.host.system(spec.container)
        deployed = registry.deployed(self.layout.applied(spec.name) / ".git")
        if system is not None and deployed.tag is not None:
            fsutil.write_atomic(self._system_record(spec), f"{deployed.tag} {system}\n")
            # The lock on disk is the one this system was just built from.
            builtfrom.record(self.layout, spec.name, read_lock(self.layout.meta))

    def recorded_system(self, spec: AgentSpec) -> tuple[str, Path] | None:
        """(deployed tag, system) as last recorded, or None (none recorded yet)."""
        try:
            tag, _, system = self._system_record(spec).read_text().strip().partition(" ")
        except FileNotFoundError:
            return None
        return (tag, Path(system)) if system else None

    def start_container(self, spec: AgentSpec, unit: UnitState) -> None:
        """`nixos-container start` of a container not running (`unit`, as just read).

        Its system is built first if its profile is missing (a create that failed
        mid-build): otherwise the unit's start script runs `nixos-container update <c>`
        itself, which rebuilds the conf's `FLAKE=` with the attribute "container", which
        the meta flake does not have. A failed unit is reset first: an operator's start
        is deliberate, and must not meet systemd's start limit."""
        from hivegen.containers import ActiveState

        if not self.host.has_profile(spec.container):
            self.host.update(spec.container, self.host.flake_ref(spec.name))
            self.record_system(spec)
        if unit.active is ActiveState.FAILED:
            self.host.reset_failed(spec.container)
        self.host.start(spec.container)

    def _restart_mark(self, spec: AgentSpec) -> Path:
        return self.layout.applied(spec.name) / ".git" / RESTART_PENDING

    def restart_container(self, spec: AgentSpec) -> None:
        """Stop and start, marked so that an interruption in between is finished later."""
        from dataclasses import replace

        from hivegen.containers import ActiveState

        fsutil.write_atomic(self._restart_mark(spec), "")
        unit = self.host.unit_state(spec.container)
        if not unit.settled:
            self.host.stop(spec.container)
            unit = replace(unit, active=ActiveState.INACTIVE)  # what a stop leaves
        self.start_container(spec, unit)
        self._restart_mark(spec).unlink(missing_ok=True)

    def restart_pending(self, spec: AgentSpec) -> bool:
        return self._restart_mark(spec).exists()

    def clear_restart_mark(self, spec: AgentSpec) -> None:
        self._restart_mark(spec).unlink(missing_ok=True)

    def refresh_host_files(self, spec: AgentSpec) -> bool:
        """Bind sources made and checked, conf and drop-in rewritten where they drifted;
        True if either changed (a running container keeps what it started with)."""
        self._ensure_dirs(spec)
        return self.write_host_files(spec)

    def put_back_deployed_system(self, spec: AgentSpec) -> bool:
        """Rebuild the container from the meta flake if its profile is not the system
        recorded for its current deploy: nixos-container switched it and the deploy that
        did so was never recorded (killed before its tag, then undone). True if rebuilt.
        Where the record is of another deploy, nothing can be judged: nothing is done."""
        record = self.recorded_system(spec)
        current = registry.deployed(self.layout.applied(spec.name) / ".git")
        if record is None or record[0] != current.tag:
            return False
        if self.host.system(spec.container) == record[1]:
            return False
        self.host.update(spec.container, self.host.flake_ref(spec.name))
        self.record_system(spec)
        return True

    def finish_restart(self, spec: AgentSpec) -> bool:
        """Start a container whose restart was interrupted after its stop; True if it did."""
        if not self.restart_pending(spec):
            return False
        unit = self.host.unit_state(spec.container)
        if not unit.running:
            self.verify_binds(spec)
            self.start_container(spec, unit)
        self._restart_mark(spec).unlink(missing_ok=True)
        return True

    # -- spawn --------------------------------------------------------------------------

    def spawn(self, name: str) -> StepLog:
        from hivegen.meta import input_name
        from hivegen.repos import seed

        spec = self.spec(name)
        steps: list[str] = []
        with self.locked():
            scan = registry.scan(self.config)
            revived = name in scan.tombstones
            if name in scan.registered and self.host.conf_exists(spec.container):
                if self.host.unit_state(spec.container).running:
                    raise HivegenError(
                        f"agent {name!r} already exists and is running "
                        f"(container {spec.container})",
                        hint=f"hivegen rebuild {name} applies changes; "
                        f"hivegen restart {name} restarts it",
                    )
            elif (
                self.host.conf_exists(spec.container)
                and name not in scan.registered
                and not revived
            ):
                raise HivegenError(
                    f"container {spec.container} exists but hivegen did not create it",
                    hint="choose another name, or remove that container first",
                )
            self.check_port(spec, running_only=False)
            self._ensure_dirs(spec)
            result = seed(self.config, self.git, name)
            # Once the applied repo exists: a spawn that fails later is still wanted up.
            desired.record(self.layout, name, Desired.RUNNING)
            if result.proposed_created:
                steps.append(f"seeded proposed repo {self.layout.proposed(name)}")
            if result.applied_created:
                steps.append(f"seeded applied repo {self.layout.applied(name)} (deployed/0)")
            if revived:
                (self.layout.applied(name) / ".git" / registry.TOMBSTONE).unlink()
                steps.append("revived from its tombstone")
            synced = self.meta.sync()
            if synced.commit:
                steps.append(f"meta flake committed {synced.commit[:12]}")
            # A resumed spawn builds what the applied repo has now (it may have been
            # fixed since the failed try). When this sync has just locked the agent's
            # input, the lock is already at its main: no second nix call.
            freshly_locked = input_name(name) in synced.plan.lock_missing
            if not freshly_locked and self.meta.lock_update(name):
                steps.append(f"meta lock bumped agent-{name}")
            flake = self.host.flake_ref(name)
            if self.host.conf_exists(spec.container):
                # A create that failed (or an interrupted spawn) left the conf behind:
                # `create` would refuse, `update` builds and finishes the job.
                self.host.update(spec.container, flake)
                steps.append(f"rebuilt container {spec.container}")
            else:
                self.host.create(spec.container, flake)
                steps.append(f"created container {spec.container}")
            self.record_system(spec)
            if self.write_host_files(spec):
                steps.append("wrote nspawn flags and limits")
            unit = self.host.unit_state(spec.container)
            if not unit.running:
                self.start_container(spec, unit)
                steps.append(f"started {spec.container}")
            steps.extend(self._answer_spawn_request(name))
        return StepLog(tuple(steps))

    def _answer_spawn_request(self, name: str) -> list[str]:
        from hivegen.spawnrequests import RequestState, SpawnRequests

        if SpawnRequests(self.config).resolve(name, RequestState.SPAWNED) is None:
            return []
        return ["answered the manager's spawn request"]

    # -- start / stop / restart ---------------------------------------------------------

    def start(self, name: str) -> StepLog:
        with self.locked():
            spec = self.registered(name)
            self.require_container(spec)
            unit = self.host.unit_state(spec.container)
            desired.record(self.layout, name, Desired.RUNNING)
            if unit.running:
                return StepLog((f"{spec.container} is already running",))
            self.check_port(spec, running_only=True)
            self._ensure_dirs(spec)
            self.write_host_files(spec)
            self.start_container(spec, unit)
        return StepLog((f"started {spec.container}",))

    def stop(self, name: str) -> StepLog:
        with self.locked():
            spec = self.registered(name)
            self.require_container(spec)
            desired.record(self.layout, name, Desired.STOPPED)
            # Not only a running unit: one waiting to restart by itself after a crash
            # (Restart=on-failure) would come back if left alone.
            # The operator's stop outranks an interrupted restart: nothing may finish it.
            self.clear_restart_mark(spec)
            if self.host.unit_state(spec.container).settled:
                return StepLog((f"{spec.container} is already stopped",))
            self.host.stop(spec.container)
        return StepLog((f"stopped {spec.container}",))

    def restart(self, name: str) -> StepLog:
        with self.locked():
            spec = self.registered(name)
            self.require_container(spec)
            self.check_port(spec, running_only=True)
            desired.record(self.layout, name, Desired.RUNNING)
            self._ensure_dirs(spec)
            self.write_host_files(spec)
            self.restart_container(spec)
        return StepLog((f"restarted {spec.container}",))

    def verify_binds(self, spec: AgentSpec) -> None:
        """Refuse (exit 2) before touching a container whose bind sources are unsafe."""
        from hivegen import nspawn

        self.migrate_notes(spec)
        nspawn.verify_binds(self.config, spec)

    def require_container(self, spec: AgentSpec) -> None:
        if not self.host.conf_exists(spec.container):
            raise HivegenError(
                f"agent {spec.name!r} has no container ({spec.container})",
                hint=f"hivegen spawn {spec.name} creates it",
            )

    # -- rebuild ------------------------------------------------------------------------

    def rebuild(self, name: str) -> StepLog:
        from hivegen import activation

        steps: list[str] = []
        with self.locked():
            spec = self.registered(name)
            self.require_container(spec)
            self.check_port(spec, running_only=True)
            self._ensure_dirs(spec)
            synced = self.meta.sync()
            if synced.commit:
                steps.append(f"meta flake committed {synced.commit[:12]}")
            bumped = self.meta.lock_update(name)
            if bumped:
                steps.append(f"meta lock bumped agent-{name} ({bumped[:12]})")
            steps += activation.activate(self, spec, "rebuild").steps
        return StepLog(tuple(steps))

    # -- destroy ------------------------------------------------------------------------

    def destroy(self, name: str, *, purge: bool = False) -> StepLog:
        from hivegen import nspawn

        spec = self.spec(name)
        steps: list[str] = []
        with self.locked():
            scan = registry.scan(self.config)
            known = name in scan.registered or name in scan.tombstones
            if not known and not (purge and self._has_leftovers(spec)):
                raise unknown_agent(name, scan)
            conf = nspawn.conf_path(self.config, spec.container)
            nspawn.refuse_declarative(conf, spec.container)
            if name in scan.registered:
                desired.record(self.layout, name, Desired.STOPPED)
            # Stopped first: nixos-container destroys a running one with `machinectl
            # terminate`, which races the unit's Restart=on-failure.
            if (
                self.host.conf_exists(spec.container)
                and self.host.unit_state(spec.container).running
            ):
                self.host.stop(spec.container)
                steps.append(f"stopped {spec.container}")
            self.host.destroy(spec.container)
            steps.append(f"destroyed container {spec.container}")
            if nspawn.remove_dropin(self.config, spec.container) or nspawn.reload_pending(
                self.config, spec.container
            ):
                self.reload_systemd(spec.container)
                steps.append("removed its limits drop-in")
            if name in scan.registered:
                fsutil.write_atomic(self.layout.applied(name) / ".git" / registry.TOMBSTONE, "")
            synced = self.meta.sync()
            if synced.commit:
                steps.append(f"meta flake committed {synced.commit[:12]}")
            if purge:
                for path in self._purge(spec):
                    steps.append(f"deleted {path}")
            else:
                steps.append("kept its repos, credentials and notes (spawn revives it)")
        return StepLog(tuple(steps))

    def _has_leftovers(self, spec: AgentSpec) -> bool:
        return any(os.path.lexists(t.path) for t in self._purge_targets(spec))

    def _purge_targets(self, spec: AgentSpec) -> list[_PurgeTarget]:
        state = self.layout.root
        runtime = self.config.runtime_dir(spec).relative_to(self.config.host.runtime_root)
        return [
            _PurgeTarget(state, PurePosixPath("agents"), spec.name),
            _PurgeTarget(state, PurePosixPath("notes"), spec.name),
            _PurgeTarget(state, PurePosixPath("credentials"), spec.name),
            _PurgeTarget(
                self.config.host.runtime_root, PurePosixPath(runtime.parent), runtime.name
            ),
            # Last: while the applied repo exists, a re-run still knows the agent.
            _PurgeTarget(state, PurePosixPath("applied"), spec.name),
        ]

    def _purge(self, spec: AgentSpec) -> list[Path]:
        """Delete the agent's directories, each through its parent's fd (never through a
        symlink: the manager can plant one at `agents/<n>`); every one is checked before
        any is deleted."""
        import shutil
        import stat

        from hivegen import safepath
        from hivegen.store import Store

        targets = [t for t in self._purge_targets(spec) if os.path.lexists(t.path)]
        for target in targets:
            with safepath.opened_dir(target.root, target.parent) as parent_fd:
                st = safepath.lstat_at(parent_fd, target.name)
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    found = safepath.describe(st, parent_fd, target.name)
                    raise safepath.UnsafePath(
                        f"refusing to purge {target.path}: it is {found}; nothing was deleted",
                        hint="look at it and remove it by hand; hivegen never deletes "
                        "through a link",
                    )
        # Before the applied repo goes: while it exists, a re-run still knows the agent
        # and gets here again.
        Store(self.layout.database).forget(spec.name)
        deleted = []
        for target in targets:
            with safepath.opened_dir(target.root, target.parent) as parent_fd:
                if safepath.lstat_at(parent_fd, target.name) is not None:
                    shutil.rmtree(target.name, dir_fd=parent_fd)
                    deleted.append(target.path)
        return deleted

    # -- list and status ----------------------------------------------------------------

    def status(self) -> list[status_mod.AgentStatus]:
        """Every agent, tombstone and foreign h-* container: at most one process."""
        from hivegen import status as status_mod

        return status_mod.collect(self)

    def agents(self) -> list[AgentSpec]:
        return [self.spec(n) for n in registry.registered_agents(self.config)]


def unknown_agent(name: str, scan: registry.Registry) -> UsageError:
    """The error for a name the hive does not have, with a did-you-mean."""
    import difflib

    close = difflib.get_close_matches(name, scan.registered, n=1, cutoff=0.6)
    hint = "hivegen list shows the hive"
    if close:
        hint = f"did you mean {close[0]!r}? ({hint})"
    return UsageError(f"no agent named {name!r}", hint=hint)
