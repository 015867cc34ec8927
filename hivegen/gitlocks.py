"""git's lock files (`index.lock`, `HEAD.lock`, `refs/.../<ref>.lock`, ...) in the repos
hivegen owns: who holds each, and which are stale.

git creates `<file>.lock` with O_EXCL, writes the new content into it, and renames it
over `<file>`; a git killed in between leaves it behind, and every later git that needs
that file fails ("Unable to create '…/index.lock': File exists") until it is removed.
A lock is *stale* when no process has it open and it is older than `SAFE_AGE`: a live
git holds its lock open for the whole update, and none takes minutes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SAFE_AGE = 300.0


@dataclass(frozen=True, slots=True)
class GitLock:
    path: Path
    age: float
    # Processes that have it open (pid, command name): a live git is using it.
    holders: tuple[tuple[int, str], ...]

    @property
    def stale(self) -> bool:
        return not self.holders and self.age >= SAFE_AGE


def lock_files(git_dir: Path) -> Iterator[Path]:
    """Every *.lock under a .git dir, objects/ left out (git locks no loose object)."""
    for directory, subdirs, files in os.walk(git_dir):
        if Path(directory) == git_dir and "objects" in subdirs:
            subdirs.remove("objects")
        for name in files:
            if name.endswith(".lock"):
                yield Path(directory, name)


def open_files() -> dict[str, list[tuple[int, str]]]:
    """Path → processes with it open, read from /proc (one pass for every lock)."""
    # os-level calls on str paths: a host has thousands of open fds to look through.
    holders: dict[str, list[tuple[int, str]]] = {}
    try:
        pids = [entry.name for entry in os.scandir("/proc") if entry.name.isdigit()]
    except OSError:
        return holders
    for pid in pids:
        try:
            fds = [entry.path for entry in os.scandir(f"/proc/{pid}/fd")]
        except OSError:
            continue  # gone, or not ours to look at
        for fd in fds:
            try:
                target = os.readlink(fd)  # noqa: PTH115 (a str, for speed, as above)
            except OSError:
                continue
            if target.endswith(".lock"):
                holders.setdefault(target, []).append((int(pid), _comm(pid)))
    return holders


def survey(git_dirs: list[Path]) -> list[GitLock]:
    found = [path for git_dir in git_dirs for path in lock_files(git_dir)]
    if not found:
        return []
    holders = open_files()
    now = time.time()
    locks = []
    for path in found:
        try:
            age = now - path.lstat().st_mtime
        except FileNotFoundError:
            continue  # its git just finished
        locks.append(GitLock(path, max(age, 0.0), tuple(holders.get(str(path), ()))))
    return locks


def recheck(path: Path) -> GitLock | None:
    """The lock as it is now, or None if it is gone."""
    try:
        age = time.time() - path.lstat().st_mtime
    except FileNotFoundError:
        return None
    return GitLock(path, max(age, 0.0), tuple(open_files().get(str(path), ())))


def remove_if_stale(path: Path) -> bool:
    """Remove a lock that is still stale when looked at again; True if removed."""
    lock = recheck(path)
    if lock is None or not lock.stale:
        return False
    path.unlink(missing_ok=True)
    return True


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text(errors="replace").strip()
    except OSError:
        return "?"
