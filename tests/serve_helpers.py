"""`hivegen serve` as a real process for tests, and an HTTP client over a unix socket.

Test paths under pytest's tmp dir can be longer than a unix socket address allows
(107 bytes): the client connects through `/proc/self/fd/<dir fd>/<name>`, as the
server binds.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hivegen.serve.client import UnixConnection

READY = "agent sockets:"


def spawned_hive(tmp_path: Path, hyperhive_flake: str) -> Path:
    """A simulated hive with the manager, alice and bob spawned: its config's path."""
    from hivegen.config import load_config
    from hivegen.hive import Hive
    from tests.conftest import sim_config

    path = sim_config(tmp_path, hyperhive_flake)
    hive = Hive(load_config(path))
    for name in ("hm1nd", "alice", "bob"):
        hive.spawn(name)
    return path


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def request(
    path: Path,
    method: str,
    url: str,
    body: object = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Reply:
    """One HTTP request over the unix socket at `path` (JSON `body`, or `raw` bytes)."""
    # hivegen's own client connection (through the directory's fd: long paths work).
    connection = UnixConnection(path, timeout)
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    try:
        connection.request(method, url, body=data, headers=sent)
        response = connection.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


@dataclass
class Server:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first log line (from now on, or already seen) matching `pattern`."""
        regex = re.compile(pattern)
        for line in self.lines:
            if (found := regex.search(line)) is not None:
                return found
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                got = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got is None:
                raise AssertionError("hivegen serve exited:\n" + "\n".join(self.lines))
            self.lines.append(got)
            if (found := regex.search(got)) is not None:
                return found
        raise AssertionError(f"no log line matching {pattern!r}:\n" + "\n".join(self.lines))

    @property
    def url(self) -> str:
        return self.wait_for(r"dashboard on (http://\S+)").group(1)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=30)
        finally:
            with contextlib.suppress(queue.Empty):
                while (line := self._queue.get(timeout=2)) is not None:
                    self.lines.append(line)


@contextlib.contextmanager
def serving(
    config: Path,
    *args: str,
    env: dict[str, str] | None = None,
    wrapper: list[str] | None = None,
) -> Iterator[Server]:
    """`hivegen --config CONFIG serve ARGS`, up (its agents' sockets listening) until the
    block ends, then stopped with SIGTERM; `wrapper` runs it (`prlimit ... --`)."""
    process = subprocess.Popen(
        [
            *(wrapper or []),
            *(sys.executable, "-m", "hivegen", "--config", str(config), "serve", *args),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    server = Server(process)
    threading.Thread(target=server._pump, daemon=True).start()
    try:
        server.wait_for(READY)
        yield server
    finally:
        server.stop()
