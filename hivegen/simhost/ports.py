"""The simulated containers' web ports: what an agent listening on HIVE_PORT looks like.

A real agent serves its web UI on `HIVE_PORT` in the host's network namespace. Here, one
small daemon per simulated host listens, on the address in `HIVEGEN_SIMHOST_LISTEN`
(loopback; each test hive gets its own 127.x.y.z, so that two hives' agents of one name
never share a port), on the port of every container that is active and whose system
does not say `SIMHOST_PORT = "closed"` (an agent whose web server never comes up).
A connection is accepted and closed at once.

`systemctl start`/`restart`/`reload` make sure the daemon runs and wake it (SIGUSR1);
it also re-reads the units every second. It exits when the simulated host's directory
is gone, or after `IDLE_SECONDS` without a unit change or a connection: every check
hivegen makes follows an activation, which starts it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hivegen.simhost import units
from hivegen.simhost.state import Host

ENV_LISTEN = "HIVEGEN_SIMHOST_LISTEN"
DEFAULT_LISTEN = "127.0.0.1"
IDLE_SECONDS = 60.0
RESCAN_SECONDS = 1.0


def _pid_file(host: Host) -> Path:
    return host.root / "systemd" / "ports.pid"


def _lock_file(host: Host) -> Path:
    return host.root / "systemd" / "ports.lock"


def wanted_ports(host: Host) -> set[int]:
    """The ports of the active containers whose system listens."""
    ports = set()
    for name in units.known_units(host):
        unit = units.read_unit(host, name)
        if unit.active is not units.ActiveState.ACTIVE or not unit.system:
            continue
        try:
            variables = json.loads((Path(unit.system) / "variables.json").read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(variables, dict) or variables.get("SIMHOST_PORT") == "closed":
            continue
        port = str(variables.get("HIVE_PORT", ""))
        if port.isdigit() and 0 < int(port) < 65536:
            ports.add(int(port))
    return ports


def ensure_running(host: Host) -> None:
    """Start the daemon if it is not running, else wake it to re-read the units."""
    try:
        pid = int(_pid_file(host).read_text())
        # Only ours: a stale pid file's number may be another process's by now.
        if b"hivegen.simhost.ports" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGUSR1)
            return
    except (OSError, ValueError):
        pass
    # Its own session, no inherited output: it outlives this systemctl call.
    subprocess.Popen(
        [sys.executable, "-m", "hivegen.simhost.ports"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def serve(host: Host, address: str) -> None:
    lock = _lock_file(host).open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another daemon serves this host
    _pid_file(host).write_text(f"{os.getpid()}\n")
    woken = [True]
    signal.signal(signal.SIGUSR1, lambda *_: woken.__setitem__(0, True))
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    selector = selectors.DefaultSelector()
    listening: dict[int, socket.socket] = {}
    last_activity = time.monotonic()
    last_scan = 0.0
    try:
        while host.root.is_dir():
            now = time.monotonic()
            if woken[0] or now - last_scan >= RESCAN_SECONDS:
                woken[0] = False
                last_scan = now
                wanted = wanted_ports(host)
                if wanted != set(listening):
                    last_activity = now
                for port in sorted(set(listening) - wanted):
                    selector.unregister(listening[port])
                    listening.pop(port).close()
                for port in sorted(wanted - set(listening)):
                    sock = socket.socket(family, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        sock.bind((address, port))
                        sock.listen(16)
                    except OSError:
                        sock.close()  # taken: retried at the next scan
                        continue
                    sock.setblocking(False)
                    selector.register(sock, selectors.EVENT_READ)
                    listening[port] = sock
            if now - last_activity > IDLE_SECONDS:
                return
            for key, _ in selector.select(timeout=0.2):
                listener = key.fileobj
                assert isinstance(listener, socket.socket)
                with contextlib.suppress(OSError):
                    conn, _ = listener.accept()
                    conn.close()
                    last_activity = time.monotonic()
    finally:
        for sock in listening.values():
            sock.close()
        with contextlib.suppress(OSError):
            _pid_file(host).unlink()
        lock.close()


def main() -> int:
    # The environment systemctl runs in names the simulated host (state.ENV_ROOT).
    serve(Host.from_env(os.environ), os.environ.get(ENV_LISTEN) or DEFAULT_LISTEN)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
