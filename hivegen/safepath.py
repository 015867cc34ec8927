"""Paths under hivegen's roots, reached without ever following a symlink.

Who can write where. Each container writes *inside* its bind sources: its runtime dir,
its credentials dir, its notes dir and `shared/`; the manager also inside `agents/`
(every proposed repo). A container can therefore replace any entry that lies strictly
inside one of those directories (with a symlink to `/`, a file, a dir of its own), but
never a bind source itself nor anything above one: those live in directories that only
the host's root writes (`<state>`, `<state>/notes`, `<state>/credentials`,
`<runtime>/agents`).

The design that follows from it (issue: "Security II"):
- **No bind source lies inside a container-writable directory.** Notes live in
  `<state>/notes/<n>`, not in `<state>/agents/<n>/state` (inside the manager's RW
  `/agents` bind, where the manager could swap any agent's notes dir, its own included,
  for a symlink that systemd-nspawn would then follow). Nothing but the host's root can
  change a bind source path once hivegen has checked it, so the check before a conf is
  written (and again before every start) cannot be raced: systemd-nspawn, which opens
  the path later, sees what hivegen saw.
- **Every bind source is checked from its trusted root** (the state root or the runtime
  root, which the operator configures) one component at a time with `O_NOFOLLOW`:
  each must be a real directory, and every directory above it must be owned by root and
  writable by no one else (whoever else could write one could swap what is in it). The
  bind source itself only has to be a real directory: its mode and owner are the
  container's to change (any agent can chmod `/shared`; refusing then would let one agent
  stop every other from starting). A symlink, a file, another owner above a bind source or
  a `..` is refused (`UnsafePath`, exit 2) naming the path and what was found.
- **Repos a container can write are read through a directory fd** opened the same way
  (`open_dir`), never through a path string that could be swapped between a check and
  its use; see `snapshot.py`.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hivegen.errors import UsageError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(UsageError):
    """A path hivegen must use is a symlink, the wrong type, or owned by someone else.

    `problem` says which path and what was found (None for a path that is only missing
    or not allowed as written)."""

    def __init__(self, message: str, *, hint: str | None = None, problem: Problem | None = None):
        super().__init__(message, hint=hint)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with one path: `found` reads as "<path> is <found>"."""

    path: Path
    found: str

    def message(self) -> str:
        return f"unsafe path {self.path}: it is {self.found}"


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device node"
    return "an unknown file type"


def describe(st: os.stat_result, dir_fd: int, name: str) -> str:
    """`st` (an lstat of `name` in `dir_fd`) in words, a symlink with its target."""
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError:
            target = "?"
        return f"a symlink (to {target!r})"
    return _kind(st.st_mode)


def dir_problem(st: os.stat_result, dir_fd: int, name: str, *, owned: bool) -> str | None:
    """Why an lstat'ed entry is not a directory hivegen may use (and, when `owned`, trust
    the entries of), or None."""
    if not stat.S_ISDIR(st.st_mode):
        return describe(st, dir_fd, name)
    return owner_problem(st) if owned else None


def owner_problem(st: os.stat_result) -> str | None:
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}"
    if st.st_mode & 0o022:
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _parts(rel: str | PurePosixPath) -> list[str]:
    text = str(rel)
    parts = [p for p in text.split("/") if p]
    if text.startswith("/") or any(p in (".", "..") for p in parts):
        raise UnsafePath(f"refusing path {text!r}: it must be relative, without '.' or '..'")
    return parts


def open_root(root: Path) -> int:
    """Open a trusted root (state or runtime root) and check who owns it."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    problem = owner_problem(os.fstat(fd))
    if problem is not None:
        os.close(fd)
        raise UnsafePath(
            f"{root} is {problem}: hivegen's roots must be root's alone",
            hint=f"chown root:root {root} && chmod go-w {root}",
            problem=Problem(root, problem),
        )
    return fd


def open_dir(
    root: Path,
    rel: str | PurePosixPath,
    *,
    create_mode: int | None = None,
    enforce_mode: bool = False,
    owned: int | None = None,
) -> int:
    """An O_NOFOLLOW fd of `root/rel`, every component checked; the caller closes it.

    Every component must be a real directory; the first `owned` of them (default: all
    but the last) must also be root's alone. With `create_mode`, missing components are
    made with that mode (exact, not filtered by the umask); with `enforce_mode` an
    existing last component gets it too.
    """
    parts = _parts(rel)
    owned = len(parts) - 1 if owned is None else owned
    fd = open_root(root)
    here = root
    try:
        for index, name in enumerate(parts):
            here = here / name
            last = index == len(parts) - 1
            created = False
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if create_mode is None:
                    raise UnsafePath(f"{here} does not exist") from None
                os.mkdir(name, create_mode, dir_fd=fd)
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                created = True
            problem = dir_problem(st, fd, name, owned=index < owned)
            if problem is not None:
                raise UnsafePath(
                    Problem(here, problem).message(),
                    hint="something replaced a path hivegen owns; hivegen doctor lists every "
                    "such path (nothing was started or written through it)",
                    problem=Problem(here, problem),
                )
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            opened = os.fstat(child)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                os.close(child)  # swapped between the lstat and the open
                raise UnsafePath(
                    f"{here} changed while hivegen was checking it",
                    problem=Problem(here, "changing while hivegen checks it"),
                )
            if create_mode is not None and (created or (last and enforce_mode)):
                # Through the fd: exact (mkdir's mode is filtered by the umask), and the
                # directory just checked, whatever its name points at by now.
                os.fchmod(child, create_mode)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def opened_dir(
    root: Path,
    rel: str | PurePosixPath,
    *,
    create_mode: int | None = None,
    enforce_mode: bool = False,
    owned: int | None = None,
) -> Iterator[int]:
    fd = open_dir(root, rel, create_mode=create_mode, enforce_mode=enforce_mode, owned=owned)
    try:
        yield fd
    finally:
        os.close(fd)


def check_dir(
    root: Path,
    rel: str | PurePosixPath,
    *,
    create_mode: int | None = None,
    enforce_mode: bool = False,
    owned: int | None = None,
) -> None:
    """Raise `UnsafePath` unless `root/rel` is reached through real, root-owned dirs."""
    os.close(open_dir(root, rel, create_mode=create_mode, enforce_mode=enforce_mode, owned=owned))


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def survey(root: Path, rel: str | PurePosixPath, *, owned: int | None = None) -> Problem | None:
    """`check_dir` for reports: the first problem on the way, or None (also when the path
    is simply missing). Never follows, never creates, never raises for a bad entry."""
    try:
        os.close(open_dir(root, rel, owned=owned))
    except FileNotFoundError:
        return None  # the root itself
    except UnsafePath as exc:
        return exc.problem
    except OSError as exc:
        return Problem(root.joinpath(str(rel)), f"unreadable ({exc.strerror})")
    return None
