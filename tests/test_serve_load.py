"""`hivegen serve` under a hostile container's load, and beside a second serve: one
agent holding connections open cannot make the server unreachable for the others or
the operator, and two servers never fight over one hive's sockets."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hivegen.config import load_config
from hivegen.serve import limits
from tests.conftest import commit_dir, git
from tests.serve_helpers import request, serving, spawned_hive

# Each test here holds hundreds of connections: not beside the other serve tests' timing.
pytestmark = pytest.mark.xdist_group("serve-load")


@pytest.fixture
def config(tmp_path: Path, hyperhive_flake: str) -> Path:
    return spawned_hive(tmp_path, hyperhive_flake)


def sock(config: Path, name: str) -> Path:
    loaded = load_config(config)
    return loaded.runtime_dir(loaded.agent(name)) / "hive.sock"


def dashboard_sock(config: Path) -> Path:
    return load_config(config).host.runtime_root.parent / "hivegen" / "dashboard.sock"


def connect(path: Path) -> socket.socket:
    """A client connection, through the directory's fd (test paths are long)."""
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(5)
        conn.connect(f"/proc/self/fd/{fd}/{path.name}")
        return conn
    finally:
        os.close(fd)


@pytest.fixture
def slow_clients() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for conn in held:
        conn.close()


def hold(path: Path, count: int, held: list[socket.socket]) -> None:
    """`count` connections that start a request and never finish its headers."""
    for _ in range(count):
        try:
            conn = connect(path)
            conn.sendall(b"GET / HTTP/1.1\r\nHost: hive\r\n")
        except OSError:
            continue  # refused or reset at once by a bounded server: fine
        held.append(conn)


def refused_answer(path: Path) -> bytes:
    """What a connection over the bounds reads: the server answers and closes at once,
    maybe before the request is written (then its write fails, the answer is there)."""
    conn = connect(path)
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(b"GET / HTTP/1.1\r\nHost: hive\r\n\r\n")
        chunks = []
        while chunk := conn.recv(1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        conn.close()


def answers_quickly(path: Path, headers: dict[str, str] | None = None) -> int:
    started = time.monotonic()
    status = request(path, "GET", "/", headers=headers, timeout=5).status
    assert time.monotonic() - started < 3, "the answer took too long"
    return status


def test_one_agents_slow_connections_do_not_starve_the_others(
    config: Path, slow_clients: list[socket.socket]
) -> None:
    # Below the default fd limit's worth of held connections: each costs the server one
    # fd it keeps until the client lets go, unless the server bounds them.
    with serving(config, wrapper=["prlimit", "--nofile=256:256", "--"]) as server:
        hold(sock(config, "alice"), 600, slow_clients)
        for name in ("bob", "hm1nd"):
            assert answers_quickly(sock(config, name)) == 200
        assert answers_quickly(dashboard_sock(config), {"Host": "localhost"}) == 200
        # Alice's own socket refuses more at once, with an answer, not a hang.
        over = refused_answer(sock(config, "alice"))
        assert over.startswith(b"HTTP/1.1 503 "), over
        assert b"alice's socket already holds 8 connections" in over
        # A body that never comes is given up on too, with an answer.
        trickle = connect(sock(config, "hm1nd"))
        slow_clients.append(trickle)
        trickle.sendall(b"POST /propose HTTP/1.1\r\nHost: hive\r\nContent-Length: 100\r\n\r\n{")
        # Her held connections are closed by the server once headers are overdue.
        time.sleep(max(limits.HEADER_TIMEOUT, limits.BODY_TIMEOUT) + 2)
        trickle.settimeout(5)
        assert trickle.recv(1 << 16).startswith(b"HTTP/1.1 408 ")
        slow_clients.remove(trickle)
        still_open = 0
        for conn in slow_clients:
            try:
                conn.settimeout(0.2)
                if conn.recv(1 << 16) != b"" and conn.recv(1 << 16) != b"":
                    still_open += 1
            except TimeoutError:
                still_open += 1
            except OSError:
                pass
        assert still_open == 0
        assert answers_quickly(sock(config, "alice")) == 200
        assert server.stop() == 0
    log = "\n".join(server.lines)
    assert "Errno 24" not in log
    assert "Traceback" not in log


def test_a_second_serve_of_the_same_hive_is_refused_and_touches_nothing(
    config: Path, tmp_path: Path
) -> None:
    with serving(config) as first:
        pid = first.process.pid
        before = os.lstat(dashboard_sock(config)).st_ino
        second = subprocess.run(
            [sys.executable, "-m", "hivegen", "--config", str(config), "serve"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1, second.stderr
        assert f"hivegen serve (pid {pid}) already serves this hive" in second.stderr
        # The first one's sockets are where they were and still answer.
        assert os.lstat(dashboard_sock(config)).st_ino == before
        assert answers_quickly(dashboard_sock(config), {"Host": "localhost"}) == 200
        assert answers_quickly(sock(config, "alice")) == 200
        assert first.stop() == 0


def test_a_stopping_serve_removes_only_its_own_dashboard_socket(config: Path) -> None:
    """A socket at the dashboard's path that is not this serve's (an operator's, or a
    later serve's) is left where it is."""
    with serving(config) as server:
        path = dashboard_sock(config)
        path.unlink()
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
        try:
            other.bind(f"/proc/self/fd/{fd}/{path.name}")
        finally:
            os.close(fd)
        mine = os.lstat(path).st_ino
        assert server.stop() == 0
    assert os.lstat(path).st_ino == mine
    other.close()


def bad_tree_commit(repo: Path) -> str:
    """A commit whose tree has an entry named `..` (git's fsck refuses it)."""
    (repo / "x").write_text("x\n")
    blob = git(repo, "hash-object", "-w", "x")
    entry = b"100644 ..\0" + bytes.fromhex(blob)
    tree = (
        subprocess.run(
            ["git", "-C", str(repo), "hash-object", "-w", "-t", "tree", "--literally", "--stdin"],
            input=entry,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    return git(repo, "commit-tree", tree, "-p", "HEAD", "-m", "a tree with ..")


def test_a_malformed_commit_is_a_plain_refusal_naming_no_host_path(
    config: Path, tmp_path: Path
) -> None:
    proposed = load_config(config).layout.proposed("alice")
    commit_dir(proposed, "a change")  # something to be a parent
    sha = bad_tree_commit(proposed)
    with serving(config):
        reply = request(
            sock(config, "hm1nd"), "POST", "/propose", {"agent": "alice", "commit": sha}
        )
    assert reply.status == 400, reply.body
    body = reply.json()
    assert isinstance(body, dict)
    assert "malformed" in str(body["error"])
    shown = reply.body.decode()
    assert str(tmp_path) not in shown
    assert "hasDotdot" in shown  # what fsck found, said
    assert "git -c" not in shown  # no command line
    assert "hivegen-fetch" not in shown


def test_a_gate_out_of_fds_backs_off_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    """accept() failing with EMFILE: no spin, no traceback per try, one log line."""
    import asyncio
    import errno

    from aiohttp import web

    from hivegen.serve import conns

    tries: list[float] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        async def out_of_fds(sock: socket.socket) -> tuple[socket.socket, object]:
            tries.append(time.monotonic())
            raise OSError(errno.EMFILE, "Too many open files")

        loop.sock_accept = out_of_fds  # type: ignore[method-assign]
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

        async def answer(request: web.BaseRequest) -> web.StreamResponse:
            return web.Response()

        server = web.Server(answer)
        gate = conns.Gate(listening, server, label="x", cap=8, tracker=conns.Tracker())
        gate.start()
        await asyncio.sleep(2.0)
        await gate.stop()

    with caplog.at_level("WARNING", logger="hivegen.serve"):
        asyncio.run(scenario())
    assert 3 <= len(tries) <= 10, len(tries)  # backing off to a second, not spinning
    warned = [r.getMessage() for r in caplog.records if "cannot accept" in r.getMessage()]
    assert warned == [
        "cannot accept connections: Too many open files; 0 held by agents (backing off)"
    ]
