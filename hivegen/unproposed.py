"""Commits the manager made that nobody proposed: shown by `status` and `pending`.

**Definition.** An agent's unproposed commits are the commits reachable from the tip of
its proposed repo's `main` that are reachable from none of these, all in its applied
repo: `main` (what is deployed), `deployed/0` (the seed), and every `proposal/<id>` tag,
whatever became of that proposal (pending, deployed, failed, denied, a rollback). So a
tip that is already a proposal's commit has none, and commits the operator has already
seen (denied, or a build that failed) do not come back as unproposed; what the manager
commits on top of them does. This is `git rev-list main --not <those refs>`, computed
without git.

**No process, whatever the hive's size.** git never runs in a proposed repo, and status
is one process for the hive, so the objects are read in Python (gitobjects.py). An agent
whose proposed main is one of those refs costs no object read at all. Otherwise the walk
goes back from the tip and stops at any commit the applied repo holds: every commit
reachable from those refs is there (each was fetched with its history), so when none of
the commits walked is in the applied repo, the walk is the answer. Only when one is (an
object left by a refused propose, say) is the applied repo's history walked too, to tell
which are reachable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from hivegen import jsondoc, registry, snapshot
from hivegen.errors import HivegenError
from hivegen.gitobjects import Commit, ObjectStore, UnreadableObjects, open_git_dir
from hivegen.layout import Layout

# The most commits walked on either side: a config repo has far fewer, and one with more
# must not make `status` slow.
MAX_COMMITS = 10_000
MAX_APPLIED_COMMITS = 100_000
MAIN = "refs/heads/main"


@dataclass(frozen=True, slots=True)
class Unproposed:
    """An agent's unproposed commits, newest first; `error` says why they could not be
    read (then `commits` is empty and the count unknown)."""

    agent: str
    commits: tuple[Commit, ...] = ()
    error: str | None = None

    @property
    def count(self) -> int | None:
        return None if self.error is not None else len(self.commits)

    def as_json(self) -> dict[str, object]:
        return {
            "agent": self.agent,
            "count": self.count,
            "error": self.error,
            "commits": [
                {"sha": c.sha, "subject": c.subject, "committed": jsondoc.time(c.time)}
                for c in self.commits
            ],
        }


def of_agent(layout: Layout, agent: str) -> Unproposed:
    """The agent's unproposed commits; never raises for a repo it cannot read."""
    try:
        return Unproposed(agent, tuple(_walk(layout, agent)))
    except (HivegenError, OSError) as exc:
        message = exc.message if isinstance(exc, HivegenError) else str(exc)
        return Unproposed(agent, error=message)


def of_agents(layout: Layout, agents: Iterable[str]) -> list[Unproposed]:
    """Each agent's unproposed commits, for those that have some or cannot be read."""
    found = (of_agent(layout, agent) for agent in agents)
    return [u for u in found if u.count != 0]


def _seen_refs(git_dir: Path) -> set[str]:
    refs = {registry.read_ref(git_dir, MAIN), registry.read_ref(git_dir, registry.DEPLOYED_ZERO)}
    refs.update(registry.proposal_tags(git_dir).values())
    return {sha for sha in refs if sha}


def _walk(layout: Layout, agent: str) -> list[Commit]:
    applied_git = layout.applied(agent) / ".git"
    proposed_git = layout.proposed(agent) / ".git"
    seen = _seen_refs(applied_git)
    proposed_fd = snapshot.open_proposed_git(layout.root, agent)
    try:
        tip = snapshot.read_main(proposed_fd, proposed_git)
        if tip is None or tip in seen:
            return []  # the common case: nothing but refs read
        applied_fd = open_git_dir(applied_git)
        try:
            with (
                ObjectStore.open(applied_fd, applied_git) as applied,
                ObjectStore.open(proposed_fd, proposed_git) as proposed,
            ):
                return walk(tip, seen, applied, proposed)
        finally:
            os.close(applied_fd)
    finally:
        os.close(proposed_fd)


def walk(tip: str, seen: set[str], applied: ObjectStore, proposed: ObjectStore) -> list[Commit]:
    """The commits reachable from `tip` and from none of `seen`, newest first. `applied`
    must hold every commit reachable from `seen` (an applied repo does)."""
    held: list[str] = []

    def first_stop(sha: str) -> bool:
        if sha in seen:
            return True
        if applied.has(sha):
            held.append(sha)
            return True
        return False

    found = _walk_from(tip, first_stop, (proposed,))
    if held:
        # A walked commit is in the applied repo: reachable from the refs, or only left
        # there (the objects of a refused propose)? Its history says.
        reachable = _history(applied, seen)
        found = _walk_from(tip, reachable.__contains__, (applied, proposed))
    return sorted(found.values(), key=lambda c: -c.time)


def _read(sha: str, stores: tuple[ObjectStore, ...]) -> Commit | None:
    for store in stores:
        commit = store.commit(sha)
        if commit is not None:
            return commit
    return None


def _walk_from(
    tip: str, stop: Callable[[str], bool], stores: tuple[ObjectStore, ...]
) -> dict[str, Commit]:
    """The commits from `tip` back to (not including) those where `stop` holds."""
    found: dict[str, Commit] = {}
    queue, queued = [tip], {tip}
    while queue:
        sha = queue.pop()
        if stop(sha):
            continue
        commit = _read(sha, stores)
        if commit is None:
            raise UnreadableObjects(
                f"commit {sha[:12]} of the manager's main is missing from its repo "
                "(a shallow clone, or objects only an alternate holds)"
            )
        found[sha] = commit
        if len(found) > MAX_COMMITS:
            raise UnreadableObjects(f"more than {MAX_COMMITS} commits since the last proposal")
        for parent in commit.parents:
            if parent not in queued:
                queued.add(parent)
                queue.append(parent)
    return found


def _history(applied: ObjectStore, tips: set[str]) -> set[str]:
    """Every commit reachable from `tips` in the applied repo (hivegen's own)."""
    reachable: set[str] = set()
    queue = list(tips)
    while queue:
        sha = queue.pop()
        if sha in reachable:
            continue
        commit = applied.commit(sha)
        if commit is None:
            raise UnreadableObjects(f"{applied.where}: commit {sha[:12]} is missing")
        reachable.add(sha)
        if len(reachable) > MAX_APPLIED_COMMITS:
            raise UnreadableObjects(f"{applied.where}: more than {MAX_APPLIED_COMMITS} commits")
        queue.extend(p for p in commit.parents if p not in reachable)
    return reachable
