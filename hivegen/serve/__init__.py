"""`hivegen serve`: the containers' request sockets and the operator's dashboard.

One process, one asyncio loop (aiohttp), several listeners:
- a socket per registered agent, `<runtime dir>/hive.sock`, which the container sees as
  `/run/hive/hive.sock` (api.py). **Who asks is the socket a request arrived on**: each
  socket has an application of its own that knows its agent, and nothing in a request
  can change that. A sub-agent can read its own status and proposals; the manager can
  also propose and ask for a spawn; no container can approve, deny or roll back.
- the dashboard (dashboard.py) on a root-only unix socket, and optionally on TCP with a
  token (the agents share the host's network namespace, so any TCP port is theirs to
  reach too).

Every change goes through the library verbs (Proposals, Hive) under the hive lock, in
worker threads, so the CLI works beside the server and each sees the other's work.
This module stays light: aiohttp is imported only by `run()`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from hivegen.errors import UsageError

if TYPE_CHECKING:
    from hivegen.config import Config
    from hivegen.hive import Hive

# Builds a Hive for one verb run by the server; the callback receives build output.
HiveFactory = Callable[[Callable[[str], None] | None], "Hive"]


class Stopped(StrEnum):
    """Why `run()` returned."""

    TERMINATED = "terminated"  # SIGTERM (systemd stop)
    INTERRUPTED = "interrupted"  # SIGINT (Ctrl-C)


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


@dataclass(frozen=True, slots=True)
class ServeOptions:
    dashboard_socket: Path
    token_file: Path
    listen: Listen | None = None
    # Host names the dashboard answers to besides localhost and the listen address
    # (a Host header check against DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()
    # How often the agents' sockets are checked (a restart, a reboot or a reconcile may
    # have re-created a runtime dir; a spawn adds an agent).
    poll_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class Ready:
    """What the server listens on, once it does."""

    dashboard_socket: Path
    dashboard_url: str | None
    token_file: Path | None
    agents: tuple[str, ...]


def default_dashboard_socket(config: Config) -> Path:
    """Beside the runtime root: `/run/hyperhive` gives `/run/hivegen/dashboard.sock`."""
    return config.host.runtime_root.parent / "hivegen" / "dashboard.sock"


def default_token_file(config: Config) -> Path:
    # In the state root itself: no container binds it or anything above it.
    return config.layout.root / "dashboard.token"


def parse_listen(text: str) -> Listen:
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(
            f"invalid --listen {text!r}: must be HOST:PORT, e.g. 127.0.0.1:7000",
            hint="port 0 picks a free port (shown once listening)",
        )
    return Listen(host, int(port_text))


def run(
    config: Config,
    options: ServeOptions,
    make_hive: HiveFactory,
    on_ready: Callable[[Ready], None] | None = None,
    stop: threading.Event | None = None,
) -> Stopped:
    """Serve until SIGTERM or SIGINT (in the main thread) or until `stop` is set; raises
    HivegenError when it cannot start."""
    from hivegen.serve.server import serve_forever

    return serve_forever(config, options, make_hive, on_ready, stop)
