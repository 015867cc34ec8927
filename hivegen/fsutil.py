"""Atomic file writes and the hive lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from hivegen.errors import HivegenError


def write_atomic(path: Path, content: str | bytes, mode: int = 0o644) -> bool:
    """Write `content` to `path` atomically; return False (and touch nothing) if unchanged.

    A temp file in the same directory is fsynced and renamed over the target, then the
    directory is fsynced, so a crash leaves either the old or the new file, never a mix.
    """
    data = content.encode() if isinstance(content, str) else content
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except IsADirectoryError as exc:
        raise HivegenError(f"cannot write {path}: it is a directory") from exc
    import tempfile  # for a write: a read-only command never needs it

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return True


def write_atomic_at(dir_fd: int, name: str, data: bytes, shown: Path, mode: int = 0o644) -> bool:
    """`write_atomic` into a directory held open (reached without following symlinks):
    the temp file and the rename both stay in that directory whatever happens to its
    path meanwhile. `shown` is the path for messages. False (nothing written) if the
    file already holds `data`."""
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise HivegenError(f"cannot write {shown}: {exc.strerror}") from exc
    else:
        try:
            if os.read(fd, len(data) + 1) == data:
                return False
        finally:
            os.close(fd)
    import secrets

    tmp = f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)
    return True


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path, mode: int, *, enforce_mode: bool = False) -> bool:
    """Create `path` (and parents) if missing; return True if it was created.

    With `enforce_mode`, an existing directory gets `mode` too (credentials must be 0700
    whoever created them).
    """
    created = False
    try:
        path.mkdir(mode=mode, parents=True)
        created = True
    except FileExistsError:
        if not path.is_dir():
            raise HivegenError(f"{path} exists and is not a directory") from None
    if created or enforce_mode:
        # mkdir's mode is filtered by the umask; chmod makes it exact.
        path.chmod(mode)
    return created


@contextlib.contextmanager
def hive_lock(
    lock_path: Path,
    *,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    holder: str = "",
) -> Iterator[None]:
    """Hold the hive's exclusive flock for the duration of a mutating command.

    The lock dies with the process (a SIGKILLed hivegen never leaves it stale). Its file
    says who holds it ("pid <n>: <holder>"), written once the lock is ours: another
    hivegen that has to wait, or refuses to, names it.
    """
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        hints = {
            errno.EROFS: "the state root's filesystem is mounted read-only: remount it "
            "read-write (nothing was changed), then re-run the command",
            errno.ENOSPC: "a filesystem is full: free space, then re-run the command",
        }
        raise HivegenError(
            f"cannot take the hive lock {lock_path}: {exc.strerror}",
            hint=hints.get(exc.errno or 0, "hivegen runs as root, on a state root it can write"),
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            who = _lock_holder(fd)
            if not wait:
                raise HivegenError(
                    f"another hivegen holds the hive lock ({lock_path}): {who}",
                    hint="wait for it to finish, or run without --no-wait to queue behind it",
                ) from None
            if on_wait is not None:
                on_wait(who)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {holder or 'hivegen'}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _lock_holder(fd: int) -> str:
    """What the holder wrote into the lock file (one line, at most 200 characters)."""
    text = os.pread(fd, 256, 0).decode("utf-8", errors="replace").strip()
    line = text.splitlines()[0] if text else ""
    return line[:200] or "it has not said who it is yet"
