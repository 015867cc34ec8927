"""The paths doctor checks under the state and runtime roots, never following a link.

What is checked (see safepath.py for why): the roots and every directory hivegen makes
in them; each agent's bind sources, proposed repo (`agents/<n>/config/.git` a real
directory, no `objects/info/alternates`), applied repo and old notes dir; and every
entry of the manager-writable `agents/` tree down to `agents/<n>/*`, where a symlink is
what a hostile manager plants. Deeper than that (a repo's work tree, an agent's notes)
is the agents' own content, where a symlink harms no one: hivegen never reads there.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from hivegen import notes, safepath, snapshot
from hivegen.config import Config
from hivegen.layout import TOP_DIRS
from hivegen.nspawn import binds


class PathIssue(StrEnum):
    UNSAFE = "unsafe"  # a symlink, wrong type or owner where hivegen needs a directory
    PLANTED = "planted"  # a symlink in the manager's tree
    BORROWING = "borrowing"  # a proposed repo that reads objects from elsewhere
    LEGACY_NOTES = "legacy-notes"  # old notes dir not migrated yet (repairable)
    LEGACY_LEFT = "legacy-left"  # old notes dir with files beside the migrated one


@dataclass(frozen=True, slots=True)
class PathFinding:
    issue: PathIssue
    agent: str | None
    path: Path
    message: str


def survey(config: Config, agents: tuple[str, ...]) -> list[PathFinding]:
    layout = config.layout
    root = layout.root
    found: list[PathFinding] = []

    def unsafe(agent: str | None, base: Path, rel: PurePosixPath, owned: int | None = None) -> None:
        problem = safepath.survey(base, rel, owned=owned)
        if problem is not None and all(f.path != problem.path for f in found):
            found.append(PathFinding(PathIssue.UNSAFE, agent, problem.path, problem.message()))

    for rel, _mode in TOP_DIRS:
        unsafe(None, root, PurePosixPath(rel))
    found += _planted_in_agents(layout.agents)
    for name in agents:
        spec = config.agent(name)
        for bind in binds(config, spec):
            unsafe(name, bind.root, bind.rel)
        unsafe(name, root, PurePosixPath("applied", name, ".git"))
        unsafe(name, root, snapshot.proposed_git_rel(name), owned=0)
        found += _borrowing(root, name)
        found += _legacy_notes(config, name)
    return found


def _planted_in_agents(agents: Path) -> list[PathFinding]:
    found = []
    for entry in _entries(agents):
        if entry.is_symlink():
            found.append(_planted(entry, entry.name))
        elif entry.is_dir(follow_symlinks=False):
            found += [_planted(e, entry.name) for e in _entries(entry.path) if e.is_symlink()]
    return found


def _entries(directory: Path | str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as listing:
            return sorted(listing, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _link_target(path: Path) -> str:
    try:
        return str(path.readlink())
    except OSError:
        return "?"


def _planted(entry: os.DirEntry[str], agent: str) -> PathFinding:
    path = Path(entry.path)
    target = _link_target(path)
    return PathFinding(
        PathIssue.PLANTED,
        agent,
        path,
        f"{path} is a symlink (to {target!r}) in the manager's /agents tree; hivegen never "
        "follows it, and nothing should be there but repos and directories",
    )


def _borrowing(root: Path, name: str) -> list[PathFinding]:
    """The same files propose refuses, read through fds (snapshot.borrowing)."""
    git_dir = root / snapshot.proposed_git_rel(name)
    try:
        fd = snapshot.open_proposed_git(root, name)
    except (safepath.UnsafePath, OSError):
        return []  # missing, or unsafe on the way: reported as such
    try:
        found = snapshot.borrowing(fd, git_dir)
    except snapshot.HostileRepo:
        return []  # a non-directory on the way; propose names it
    finally:
        os.close(fd)
    return [
        PathFinding(
            PathIssue.BORROWING,
            name,
            git_dir / rel,
            f"{git_dir / rel} exists: git would read objects or refs from another repo on "
            "the host; propose refuses this repo until it is removed",
        )
        for rel in found
    ]


def _what(path: Path, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return f"a symlink (to {_link_target(path)!r})"
    return "not a directory"


def _legacy_notes(config: Config, name: str) -> list[PathFinding]:
    layout = config.layout
    st = notes.legacy_entry(layout, name)
    if st is None:
        return []
    old, new = layout.legacy_notes(name), layout.notes(name)
    if not stat.S_ISDIR(st.st_mode):
        return [
            PathFinding(
                PathIssue.UNSAFE,
                name,
                old,
                f"unsafe path {old}: it is {_what(old, st)} where {name}'s notes used to be; "
                "hivegen never follows or moves it",
            )
        ]
    if notes.needs_migration(layout, name):
        return [
            PathFinding(
                PathIssue.LEGACY_NOTES,
                name,
                old,
                f"{name}'s notes are still in {old}, inside the manager's RW /agents bind; "
                f"they belong in {new}",
            )
        ]
    if any(Path(old).iterdir()):
        return [
            PathFinding(
                PathIssue.LEGACY_LEFT,
                name,
                old,
                f"{old} holds files, but {name}'s notes are in {new} now (never merged: "
                "look at both)",
            )
        ]
    return []
