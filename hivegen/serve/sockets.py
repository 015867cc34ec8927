"""Unix sockets made where a container can write, without trusting what it wrote.

An agent's socket lives in its runtime dir, which the container writes (it is bound at
`/run/hive`): by the time hivegen binds, `hive.sock` may be a symlink, a file or a
directory of the container's making, and it may swap the name again at any moment.
So the socket is never made or changed through that name:
- it is bound in a staging directory only root can reach (`<runtime root>/.hivegen-serve`,
  the same filesystem), where it is made world-connectable (any user in the container
  may ask: the directory it ends up in is that container's alone);
- then renamed into the runtime dir, reached through a directory fd opened without
  following a symlink (safepath): a rename replaces whatever the name held, and never
  follows it.
Paths are passed to bind() as `/proc/self/fd/<dir fd>/<name>`: short (a unix socket
path is at most 107 bytes) and resolved through the fd, not through a swappable path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hivegen import safepath
from hivegen.errors import HivegenError

SOCKET_NAME = "hive.sock"
STAGING = ".hivegen-serve"
BACKLOG = 64


@dataclass(frozen=True, slots=True)
class Bound:
    sock: socket.socket
    # (st_dev, st_ino) of the directory it was put in and of the socket file itself:
    # when either changes, the socket is no longer reachable where it should be.
    dir_key: tuple[int, int]
    file_key: tuple[int, int]


def _key(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _at(dir_fd: int, name: str) -> str:
    return f"/proc/self/fd/{dir_fd}/{name}"


def bind_in(dir_fd: int, name: str, staging_fd: int, mode: int) -> Bound:
    """A listening socket named `name` in the directory `dir_fd`, made in `staging_fd`
    (root's alone, on the same filesystem) and renamed into place."""
    temp = f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(_at(staging_fd, temp))
        try:
            # Listening before it has its name: a client that finds the name connects
            # (renamed first, one could be refused in between).
            sock.listen(BACKLOG)
            # In the staging dir nobody else can write: the name is the socket just made.
            os.chmod(temp, mode, dir_fd=staging_fd)
            os.rename(temp, name, src_dir_fd=staging_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=staging_fd)
            raise
        sock.setblocking(False)
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return Bound(sock, _key(os.fstat(dir_fd)), _key(st))
    except BaseException:
        sock.close()
        raise


def still_there(dir_fd: int, name: str, bound: Bound) -> bool:
    """True while `dir_fd` is the directory the socket went into and `name` is it."""
    if _key(os.fstat(dir_fd)) != bound.dir_key:
        return False
    st = safepath.lstat_at(dir_fd, name)
    return st is not None and _key(st) == bound.file_key


def remove(path_root: Path, rel: PurePosixPath, name: str, bound: Bound) -> None:
    """Unlink our socket file if it is still ours (never what a container put there)."""
    try:
        with safepath.opened_dir(path_root, rel) as fd:
            if still_there(fd, name, bound):
                os.unlink(name, dir_fd=fd)
    except (OSError, HivegenError):
        pass  # gone already, or replaced: nothing of ours to remove


LOCK_NAME = "serve.lock"


def hold_serve_lock(runtime_root: Path) -> int:
    """The hive's serve lock (`<runtime root>/.hivegen-serve/serve.lock`, where no
    container reaches), held until the returned fd is closed: two servers of one hive
    would re-bind every agent's socket from under each other forever."""
    runtime_root.mkdir(mode=0o755, parents=True, exist_ok=True)
    staging = open_staging(runtime_root)
    try:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(LOCK_NAME, flags, 0o600, dir_fd=staging)
    finally:
        os.close(staging)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise HivegenError(
            f"hivegen serve (pid {holder}) already serves this hive "
            f"(its lock: {runtime_root / STAGING / LOCK_NAME})",
            hint="stop that one first (systemctl stop hivegen-serve, or kill it); one serve "
            "per hive",
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def open_staging(runtime_root: Path) -> int:
    """`<runtime root>/.hivegen-serve`, made 0700 if missing; the caller closes it."""
    return safepath.open_dir(runtime_root, STAGING, create_mode=0o700, enforce_mode=True, owned=1)
