"""Reading a repo a container can write (a proposed repo) without trusting it.

The manager owns `agents/<n>/config` and everything in it. Letting root run git there,
or point git at it, would hand the manager git's whole attack surface: its config
(`core.fsmonitor`, filters, `include.path`…), symlinks followed by git's own lockfiles
(`.git/config -> /etc/passwd` makes `git config` rewrite the target), a `.git` file
pointing anywhere, `objects/info/alternates` lending objects from any repo on the host,
and a path that can be swapped between hivegen's check and git's use.

So hivegen never does. It opens `agents/<n>/config/.git` with `O_NOFOLLOW` one component
at a time (safepath.py), reads `refs/heads/main` and copies the object files (regular
files only, bounded in count and size) through that directory fd into a private bare
repo it just made itself, and points git only at that copy (with `fsckObjects` on, so
malformed trees and `.git` path tricks are refused at transfer). The copy is the only
thing git ever reads; what the manager changes afterwards changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hivegen import fsutil, safepath
from hivegen.errors import UsageError
from hivegen.git import Git

# A proposed repo holds two small files and their history: anything near these limits is
# not a config repo, and copying it must not fill the disk or take minutes.
MAX_OBJECT_FILES = 20_000
MAX_OBJECT_BYTES = 256 * 1024 * 1024
MAX_SMALL_FILE = 1024 * 1024  # .git/config, a ref file, packed-refs
_CHUNK = 1024 * 1024
_SHA = re.compile(r"[0-9a-f]{40}\Z")
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Files that make git read objects or refs from elsewhere: refused, never copied.
BORROWING = ("objects/info/alternates", "objects/info/http-alternates", "commondir")


class HostileRepo(UsageError):
    """A proposed repo that hivegen will not read (exit 2); names the path and why."""


def proposed_git_rel(name: str) -> PurePosixPath:
    return PurePosixPath("agents", name, "config", ".git")


def open_proposed_git(state_root: Path, name: str) -> int:
    """fd of `agents/<n>/config/.git`: real directories all the way, never a link."""
    # Only the state root is trusted for ownership: the manager may chmod what it owns.
    return safepath.open_dir(state_root, proposed_git_rel(name), owned=0)


def _parent_fd(dir_fd: int, rel: str, where: Path) -> int | None:
    """An fd of the directory holding `rel` below `dir_fd` (no symlink on the way), or
    None when part of the way is missing; the caller closes it."""
    fd = os.dup(dir_fd)
    try:
        for name in rel.split("/")[:-1]:
            st = safepath.lstat_at(fd, name)
            if st is None:
                os.close(fd)
                return None
            if not stat.S_ISDIR(st.st_mode):
                raise HostileRepo(f"{where / rel}: {name} is {safepath.describe(st, fd, name)}")
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_small_file(dir_fd: int, rel: str, where: Path) -> bytes | None:
    """A regular file below `dir_fd` (no symlink on the way), or None when missing."""
    fd = _parent_fd(dir_fd, rel, where)
    if fd is None:
        return None
    try:
        return _read_regular(fd, rel.rsplit("/", maxsplit=1)[-1], where / rel, MAX_SMALL_FILE)
    finally:
        os.close(fd)


def _read_regular(dir_fd: int, name: str, path: Path, limit: int) -> bytes | None:
    st = safepath.lstat_at(dir_fd, name)
    if st is None:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise HostileRepo(f"{path} is {safepath.describe(st, dir_fd, name)}, not a file")
    if st.st_size > limit:
        raise HostileRepo(f"{path} is {st.st_size} bytes; at most {limit} are read")
    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise HostileRepo(f"{path} changed while hivegen was reading it")
        data = os.read(fd, limit + 1)
        if len(data) > limit:
            raise HostileRepo(f"{path} grew past {limit} bytes while hivegen read it")
        return data
    finally:
        os.close(fd)


def read_main(git_fd: int, where: Path) -> str | None:
    """The sha `refs/heads/main` names (loose ref, else packed-refs), or None."""
    loose = read_small_file(git_fd, "refs/heads/main", where)
    if loose is not None:
        value = loose.decode("ascii", errors="replace").strip()
    else:
        packed = read_small_file(git_fd, "packed-refs", where) or b""
        value = ""
        for line in packed.decode("ascii", errors="replace").splitlines():
            sha, _, ref = line.partition(" ")
            if ref.strip() == "refs/heads/main":
                value = sha.strip()
    if not value:
        return None
    if not _SHA.match(value):
        raise HostileRepo(f"{where}: refs/heads/main is not a commit id ({value[:60]!r})")
    return value


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A private bare repo with a copy of the proposed repo's objects."""

    path: Path
    main: str | None  # what the proposed repo's `refs/heads/main` named


@dataclass(slots=True)
class _Budget:
    where: Path
    files: int = 0
    size: int = 0

    def take(self, path: Path, size: int) -> None:
        self.files += 1
        self.size += size
        if self.files > MAX_OBJECT_FILES or self.size > MAX_OBJECT_BYTES:
            raise HostileRepo(
                f"{self.where}: the object store is larger than hivegen copies "
                f"({MAX_OBJECT_FILES} files / {MAX_OBJECT_BYTES // 2**20} MiB); "
                "a proposed repo holds an agent's config, not data",
                hint="run `git gc --prune=now` in it, or start a fresh history",
            )


def _copy_tree(src_fd: int, dst: Path, rel: Path, budget: _Budget) -> None:
    dst.mkdir(mode=0o700, exist_ok=True)
    for name in sorted(os.listdir(src_fd)):
        st = safepath.lstat_at(src_fd, name)
        if st is None:
            continue  # gone since the listing (git gc): its objects are packed
        path = rel / name
        if stat.S_ISDIR(st.st_mode):
            if name == "info" and rel.name == "objects":
                continue  # alternates (refused before) and caches git rebuilds
            child = os.open(name, _DIR_FLAGS, dir_fd=src_fd)
            try:
                _copy_tree(child, dst / name, path, budget)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode):
            budget.take(path, st.st_size)
            _copy_file(src_fd, name, dst / name, st.st_size, budget.where / path)
        else:
            raise HostileRepo(
                f"{budget.where / path} is {safepath.describe(st, src_fd, name)}: "
                "a git object store holds only files and directories"
            )


def _copy_file(src_fd: int, name: str, target: Path, size: int, shown: Path) -> None:
    fd = os.open(name, _FILE_FLAGS, dir_fd=src_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise HostileRepo(f"{shown} changed while hivegen was copying it")
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            copied = 0
            while copied <= size:
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    break
                copied += len(chunk)
                os.write(out, chunk)
            if copied > size:
                raise HostileRepo(f"{shown} grew while hivegen was copying it")
        finally:
            os.close(out)
    finally:
        os.close(fd)


@contextlib.contextmanager
def snapshot(state_root: Path, git: Git, name: str) -> Iterator[Snapshot]:
    """A private copy of `name`'s proposed repo (objects and main), removed afterwards."""
    where = state_root / proposed_git_rel(name)
    git_fd = open_proposed_git(state_root, name)
    tmp = Path(tempfile.mkdtemp(prefix=f".hivegen-snapshot-{name}-", dir=state_root))
    try:
        for rel in borrowing(git_fd, where):
            raise HostileRepo(
                f"{where / rel} exists: a proposed repo must keep its own objects "
                "(it would make git read another repository on the host)",
                hint=f"remove it inside the manager: rm /agents/{name}/config/.git/{rel}",
            )
        main = read_main(git_fd, where)
        git.run(None, "init", "--quiet", "--bare", str(tmp))
        st = safepath.lstat_at(git_fd, "objects")
        if st is None or not stat.S_ISDIR(st.st_mode):
            found = "missing" if st is None else safepath.describe(st, git_fd, "objects")
            raise HostileRepo(f"unsafe path {where}/objects: it is {found}, not a directory")
        objects_fd = os.open("objects", _DIR_FLAGS, dir_fd=git_fd)
        try:
            _copy_tree(objects_fd, tmp / "objects", Path("objects"), _Budget(where))
        finally:
            os.close(objects_fd)
        yield Snapshot(tmp, main)
    finally:
        os.close(git_fd)
        shutil.rmtree(tmp, ignore_errors=True)


def borrowing(git_fd: int, where: Path) -> list[str]:
    """Which of BORROWING a `.git` (held open) has: each makes git read elsewhere."""
    return [rel for rel in BORROWING if _lstat_rel(git_fd, rel, where) is not None]


def _lstat_rel(dir_fd: int, rel: str, where: Path) -> os.stat_result | None:
    fd = _parent_fd(dir_fd, rel, where)
    if fd is None:
        return None
    try:
        return safepath.lstat_at(fd, rel.rsplit("/", maxsplit=1)[-1])
    finally:
        os.close(fd)


def set_remote_url(git: Git, state_root: Path, name: str, remote: str, url: str) -> bool:
    """Point `remote` of the proposed repo at `url`; True if it changed.

    git never writes the manager's `.git/config` itself (its lockfile follows a planted
    symlink): hivegen edits a private copy with `git config --file` and puts the result
    back through the directory fd, atomically.
    """
    where = state_root / proposed_git_rel(name)
    git_fd = open_proposed_git(state_root, name)
    try:
        text = read_small_file(git_fd, "config", where) or b""
        with tempfile.TemporaryDirectory(prefix=".hivegen-config-", dir=state_root) as tmp:
            copy = Path(tmp, "config")
            copy.write_bytes(text)
            key = f"remote.{remote}.url"
            current = git.run(Path(tmp), "config", "--file", str(copy), "--get", key, check=False)
            if current.ok and current.stdout.strip() == url:
                return False
            git.run(Path(tmp), "config", "--file", str(copy), key, url)
            fetch = f"remote.{remote}.fetch"
            has_fetch = git.run(
                Path(tmp), "config", "--file", str(copy), "--get", fetch, check=False
            )
            if not has_fetch.ok:
                git.run(
                    Path(tmp),
                    "config",
                    "--file",
                    str(copy),
                    fetch,
                    f"+refs/heads/*:refs/remotes/{remote}/*",
                )
            fsutil.write_atomic_at(git_fd, "config", copy.read_bytes(), where / "config")
        return True
    finally:
        os.close(git_fd)
