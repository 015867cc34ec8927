"""The meta flake: one nixosConfiguration per registered agent, locked and committed.

A sync that has nothing to do starts no process: it compares the rendered flake with
the file on disk and the lock's inputs with the flake's, both read in Python.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hivegen import fsutil
from hivegen.config import Config
from hivegen.errors import HivegenError, UsageError
from hivegen.registry import has_ref, registered_agents
from hivegen.render import FLAKE_NIX, MetaModel, render_meta

if TYPE_CHECKING:
    from hivegen.git import Git

LOCK = "flake.lock"
HYPERHIVE = "hyperhive"
# Present while a sync or deploy is between its first write and its commit: a crash
# there must not look like a finished sync to the next run.
PENDING = "hivegen-pending"


def input_name(agent: str) -> str:
    return f"agent-{agent}"


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What a sync would change; empty when the meta flake is up to date."""

    agents: tuple[str, ...]
    flake_changed: bool
    inputs_added: tuple[str, ...] = ()
    inputs_removed: tuple[str, ...] = ()
    lock_missing: tuple[str, ...] = ()
    lock_extra: tuple[str, ...] = ()
    interrupted: bool = False
    first: bool = False

    @property
    def needed(self) -> bool:
        return (
            self.flake_changed
            or bool(self.lock_missing or self.lock_extra)
            or self.interrupted
            or self.first
        )

    def describe(self) -> list[str]:
        lines = []
        if self.first:
            lines.append("meta repo has no commit yet")
        if self.flake_changed:
            lines.append("flake.nix differs from the rendered meta flake")
        lines += [f"input {name} would be added" for name in self.inputs_added]
        lines += [f"input {name} would be removed" for name in self.inputs_removed]
        lines += [f"flake.lock does not lock {name}" for name in self.lock_missing]
        lines += [
            f"flake.lock locks {name}, which the flake no longer has" for name in self.lock_extra
        ]
        if self.interrupted:
            lines.append("an earlier sync or deploy was interrupted before its commit")
        return lines


@dataclass(frozen=True, slots=True)
class SyncResult:
    plan: SyncPlan
    commit: str | None = None
    # A hand edit of flake.nix (it differed from what the last commit had) that the
    # sync replaced, as a unified diff from the edit to what was written; None if none.
    overwritten: str | None = None


@dataclass(frozen=True, slots=True)
class InputChange:
    name: str
    old_rev: str | None
    new_rev: str | None
    old_nar_hash: str | None
    new_nar_hash: str | None

    @property
    def changed(self) -> bool:
        return (self.old_rev, self.old_nar_hash) != (self.new_rev, self.new_nar_hash)


@dataclass(frozen=True, slots=True)
class UpdateResult:
    changes: tuple[InputChange, ...]
    commit: str | None = None
    prefetched: dict[str, Any] = field(default_factory=dict)


def read_lock(meta_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((meta_dir / LOCK).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as locking nothing, so a sync rewrites it
    return data


def locked_inputs(lock: dict[str, Any] | None) -> set[str]:
    if not lock:
        return set()
    try:
        root = lock["nodes"][lock.get("root", "root")]
        return set(root.get("inputs", {}))
    except (KeyError, TypeError, AttributeError):
        return set()


def locked_node(lock: dict[str, Any] | None, name: str) -> dict[str, Any]:
    if not lock:
        return {}
    try:
        node_name = lock["nodes"][lock.get("root", "root")]["inputs"][name]
        node: dict[str, Any] = lock["nodes"][node_name].get("locked", {})
    except (KeyError, TypeError, AttributeError):
        return {}
    return node


class Meta:
    def __init__(self, config: Config, git: Git) -> None:
        self.config = config
        self.git = git
        self.dir = config.layout.meta

    # -- sync ---------------------------------------------------------------------------

    def model(self, agents: Sequence[str] | None = None) -> MetaModel:
        names = registered_agents(self.config) if agents is None else agents
        return MetaModel.from_config(self.config, names)

    def plan(self, agents: Sequence[str] | None = None) -> tuple[SyncPlan, str]:
        """Compare the rendered flake and the lock with disk. Starts no process."""
        model = self.model(agents)
        rendered = render_meta(model)[FLAKE_NIX]
        try:
            on_disk = (self.dir / FLAKE_NIX).read_text()
        except FileNotFoundError:
            on_disk = None
        wanted = {HYPERHIVE} | {input_name(a.name) for a in model.agents}
        locked = locked_inputs(read_lock(self.dir))
        had = _inputs_in_text(on_disk) if on_disk is not None else set()
        git_dir = self.dir / ".git"
        return (
            SyncPlan(
                agents=tuple(a.name for a in model.agents),
                flake_changed=on_disk != rendered,
                inputs_added=tuple(sorted(wanted - had)),
                inputs_removed=tuple(sorted(had - wanted)),
                lock_missing=tuple(sorted(wanted - locked)),
                lock_extra=tuple(sorted(locked - wanted)),
                interrupted=(git_dir / PENDING).exists(),
                first=not has_ref(git_dir, "refs/heads/main"),
            ),
            rendered,
        )

    def sync(self, agents: Sequence[str] | None = None) -> SyncResult:
        plan, rendered = self.plan(agents)
        if not plan.needed:
            return SyncResult(plan)
        from hivegen import nix  # a sync with something to do: reading needs no nix

        fsutil.ensure_dir(self.dir, 0o755)
        if not (self.dir / ".git").is_dir():
            self.git.init(self.dir)
        overwritten = self._hand_edit(rendered) if plan.flake_changed and not plan.first else None
        self._mark_pending()
        try:
            fsutil.write_atomic(self.dir / FLAKE_NIX, rendered)
            self.git.run(self.dir, "add", "--", FLAKE_NIX)
            nix.flake_lock(self.dir)
            self.git.run(self.dir, "add", "--", LOCK)
        except BaseException:
            self._restore_head()
            raise
        commit = None
        if plan.first or self.git.has_staged_changes(self.dir):
            message = (
                f"seed meta from {len(plan.agents)} agents"
                if plan.first
                else "regenerate meta flake"
            )
            commit = self.git.commit(self.dir, message, allow_empty=plan.first)
        self._clear_pending()
        return SyncResult(plan, commit, overwritten)

    def _hand_edit(self, rendered: str) -> str | None:
        """The diff of a hand edit the sync is about to replace: flake.nix on disk is
        neither what hivegen renders nor what the last commit holds."""
        import difflib

        try:
            on_disk = (self.dir / FLAKE_NIX).read_text()
        except FileNotFoundError:
            return None
        committed = self.git.run(self.dir, "show", f"HEAD:{FLAKE_NIX}", check=False)
        if committed.ok and committed.stdout == on_disk:
            return None  # hivegen's own text of an earlier hive: not an edit
        diff = difflib.unified_diff(
            on_disk.splitlines(keepends=True),
            rendered.splitlines(keepends=True),
            fromfile=f"{FLAKE_NIX} (as edited)",
            tofile=f"{FLAKE_NIX} (as rendered)",
        )
        return "".join(diff)

    # -- lock bumps and the two-phase deploy --------------------------------------------

    def require_synced(self) -> None:
        if not (self.dir / ".git").is_dir() or not (self.dir / LOCK).is_file():
            raise HivegenError(
                f"meta flake at {self.dir} is not set up", hint="run: hivegen meta sync"
            )

    def _agent_input(self, agent: str) -> str:
        name = input_name(agent)
        if name not in locked_inputs(read_lock(self.dir)):
            raise HivegenError(
                f"the meta flake has no input {name}",
                hint="is the agent spawned? run: hivegen meta sync",
            )
        return name

    def lock_update(self, agent: str) -> str | None:
        """Bump `agent-<n>` alone; commit only when the lock changed. Returns the commit."""
        self.require_synced()
        name = self._agent_input(agent)
        self._stage_bump([name])
        commit = None
        if self.git.has_staged_changes(self.dir):
            commit = self.git.commit(self.dir, f"lock update: {name}")
        self._clear_pending()
        return commit

    def prepare(self, agent: str) -> None:
        """Phase one of a deploy: bump and stage the agent's input, commit nothing."""
        self.require_synced()
        self._stage_bump([self._agent_input(agent)])

    def finalize(self, agent: str, tag: str, sha: str) -> str:
        """Phase two after a successful build: one commit naming the deploy."""
        commit = self.git.commit(self.dir, f"deploy {agent} {tag} {sha[:12]}", allow_empty=True)
        self._clear_pending()
        return commit

    def abort(self, agent: str) -> None:
        """Undo `prepare`: flake.lock back to HEAD's, in the index and on disk."""
        del agent  # the lock is restored whole; the name keeps the three calls alike
        self._restore_head()

    # -- operator's "bump inputs" -------------------------------------------------------

    def update(self, inputs: Sequence[str]) -> UpdateResult:
        """Prefetch, then bump each named input; one commit `lock update: a, b`."""
        from hivegen import nix

        self.require_synced()
        model = self.model()
        urls = {HYPERHIVE: model.hyperhive_flake}
        urls.update({input_name(a.name): model.applied_url(a) for a in model.agents})
        wanted = list(dict.fromkeys(inputs))
        for name in wanted:
            if name not in urls:
                known = ", ".join(sorted(urls))
                raise UsageError(f"no input {name!r} in the meta flake (it has: {known})")
        before = read_lock(self.dir)
        prefetched = {name: nix.prefetch(urls[name]) for name in wanted}
        self._stage_bump(wanted)
        after = read_lock(self.dir)
        changes = tuple(
            InputChange(
                name,
                locked_node(before, name).get("rev"),
                locked_node(after, name).get("rev"),
                locked_node(before, name).get("narHash"),
                locked_node(after, name).get("narHash"),
            )
            for name in wanted
        )
        changed = [change.name for change in changes if change.changed]
        commit = None
        if changed and self.git.has_staged_changes(self.dir):
            commit = self.git.commit(self.dir, f"lock update: {', '.join(changed)}")
            self._clear_pending()
        else:
            self._restore_head()  # nothing moved: leave the repo exactly as it was
        return UpdateResult(changes, commit, prefetched)

    # -- helpers ------------------------------------------------------------------------

    def _stage_bump(self, inputs: list[str]) -> None:
        """Re-lock `inputs` and stage flake.lock, marked pending until a commit or abort;
        on any failure the lock is put back as HEAD has it."""
        from hivegen import nix

        self._mark_pending()
        try:
            nix.update_inputs(self.dir, inputs)
            self.git.run(self.dir, "add", "--", LOCK)
        except BaseException:
            self._restore_head()
            raise

    def is_pending(self) -> bool:
        """A sync, bump or deploy started and did not reach its commit (or abort)."""
        return (self.dir / ".git" / PENDING).exists()

    def _mark_pending(self) -> None:
        fsutil.write_atomic(self.dir / ".git" / PENDING, "")

    def _clear_pending(self) -> None:
        (self.dir / ".git" / PENDING).unlink(missing_ok=True)

    def _restore_head(self) -> None:
        """Put flake.nix and flake.lock back as HEAD has them (or remove them if none)."""
        if has_ref(self.dir / ".git", "refs/heads/main"):
            self.git.run(self.dir, "reset", "--quiet", "--hard", "HEAD")
        else:
            self.git.run(
                self.dir, "rm", "--quiet", "--cached", "--ignore-unmatch", "--", FLAKE_NIX, LOCK
            )
            for rel in (FLAKE_NIX, LOCK):
                (self.dir / rel).unlink(missing_ok=True)
        self._clear_pending()


def _inputs_in_text(text: str) -> set[str]:
    """Input names declared in a meta flake hivegen rendered (`<name>.url = ...;`)."""
    found = set()
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith(";") and ".url = " in stripped:
            found.add(stripped.split(".url = ", 1)[0].strip('"'))
    return found
