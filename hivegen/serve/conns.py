"""The connections the server holds, bounded: no container can hold it open for others.

aiohttp accepts every connection it is offered and waits for a request's headers for
as long as the client likes, so a container that opens connections and sends a header
line now and then would hold one fd each until the server has none left, for every
agent and the operator alike. Each listening socket is therefore accepted here, not by
aiohttp (`Gate`):
- at most `cap` connections of one listener at once, and at most the pool's cap of all
  agents' listeners together (sized from the fd limit): one over is answered 503 and
  closed at once;
- a connection must send a request's headers within HEADER_TIMEOUT of being accepted
  or of its last answer, or it is closed (a request being handled, a long poll or an
  event stream included, is never cut: its handler bounds it);
- when accept() itself fails for want of fds, the gate backs off and says so in one log
  line every few seconds, instead of spinning.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from hivegen.serve import limits

log = logging.getLogger("hivegen.serve")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")

# accept() failing for want of resources: back off and try again.
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_WARN_EVERY = 10.0


async def within_body_timeout(read: Awaitable[T]) -> T:
    """A request body's read, bounded in time (a client trickling its body otherwise
    holds a handler, and its connection, as long as it likes)."""
    try:
        return await asyncio.wait_for(read, limits.BODY_TIMEOUT)
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            reason=f"request body not sent within {limits.BODY_TIMEOUT:g}s"
        ) from None


def agent_pool_cap() -> int:
    """All agents' connections together: what the fd limit leaves beside the dashboards,
    the listening sockets and the git and nix processes' pipes. The soft limit is
    raised to the hard one first (the NixOS module sets LimitNOFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = limits.NOFILE_WANTED if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return max(limits.MIN_AGENT_POOL, min(limits.MAX_AGENT_POOL, soft - limits.FD_RESERVE))


class Tracker:
    """When each connection last finished a request (None while one is handled)."""

    def __init__(self) -> None:
        self.idle_since: dict[RequestHandler, float | None] = {}
        self.gates: list[Gate] = []

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        protocol = request.protocol
        self.idle_since[protocol] = None
        try:
            return await handler(request)
        finally:
            self.idle_since[protocol] = time.monotonic()

    def watch(self, app: web.Application) -> web.Application:
        """`app`, its requests tracked (before its runner is set up)."""
        app.middlewares.insert(0, self.middleware)
        return app

    def sweep(self) -> None:
        """Close every connection whose next request's headers are overdue."""
        now = time.monotonic()
        live: set[RequestHandler] = set()
        for gate in self.gates:
            for handler in gate.server.connections:
                live.add(handler)
                since = self.idle_since.get(handler)
                if since is not None and now - since > limits.HEADER_TIMEOUT:
                    transport = handler.transport
                    if transport is not None:
                        transport.abort()
        for gone in set(self.idle_since) - live:
            del self.idle_since[gone]


class Pool:
    """The agents' listeners together, under one cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.gates: list[Gate] = []
        self._warned = 0.0

    def held(self) -> int:
        return sum(len(gate.server.connections) for gate in self.gates)

    def warn_exhausted(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning(
                "cannot accept connections: %s; %d held by agents (backing off)",
                exc.strerror,
                self.held(),
            )


class Gate:
    """Accepts the connections of one listening socket, within its bounds, and hands
    each to aiohttp's server."""

    def __init__(
        self,
        sock: socket.socket,
        server: web.Server,
        *,
        label: str,
        cap: int,
        tracker: Tracker,
        pool: Pool | None = None,
    ) -> None:
        self.sock = sock
        self.server = server
        self.label = label
        self.cap = cap
        self.tracker = tracker
        self.pool = pool or Pool(cap)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.sock.setblocking(False)
        self.tracker.gates.append(self)
        self.pool.gates.append(self)
        self.task = asyncio.get_running_loop().create_task(self._run(), name=self.label)

    async def stop(self) -> None:
        """Accept no more (what is held is the runner's to close)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for gates in (self.tracker.gates, self.pool.gates):
            with contextlib.suppress(ValueError):
                gates.remove(self)
        self.sock.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:
                if exc.errno not in _EXHAUSTED:
                    raise
                self.pool.warn_exhausted(exc)
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
                continue
            backoff = 0.05
            why = self._over(self.pool.held())
            if why is not None:
                _refuse(conn, why)
                continue
            try:
                _, protocol = await loop.connect_accepted_socket(self.server, conn)
            except OSError:
                conn.close()
                continue
            assert isinstance(protocol, RequestHandler)
            self.tracker.idle_since[protocol] = time.monotonic()

    def _over(self, pool_held: int) -> str | None:
        if len(self.server.connections) >= self.cap:
            return f"{self.label} already holds {self.cap} connections (at most {self.cap})"
        if pool_held >= self.pool.cap:
            return f"the server holds {pool_held} connections of agents (at most {self.pool.cap})"
        return None


def _refuse(conn: socket.socket, why: str) -> None:
    """A 503 for a connection over its bounds, written at once (a fresh socket's buffer
    takes it), and closed: an answer, not a hang."""
    body = json.dumps({"error": why, "hint": "close the connections you hold, then retry"}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) + 1}\r\nConnection: close\r\n\r\n"
    ).encode()
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(head + body + b"\n")
        # What the client sent already is read first: a unix socket closed with unread
        # data resets the peer, and the answer would be lost to it.
        for _ in range(16):
            if not conn.recv(4096):
                break
    conn.close()
