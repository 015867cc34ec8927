"""The server's life: listeners up, agents' sockets kept in step with the hive, and a
clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from aiohttp import web

from hivegen import registry, safepath
from hivegen.config import Config
from hivegen.errors import HivegenError
from hivegen.serve import (
    HiveFactory,
    Listen,
    Ready,
    ServeOptions,
    Stopped,
    api,
    auth,
    conns,
    dashboard,
    limits,
    sockets,
)
from hivegen.serve.context import Context

log = logging.getLogger("hivegen.serve")


@dataclass(slots=True)
class _AgentListener:
    bound: sockets.Bound
    runner: web.AppRunner
    gate: conns.Gate


class AgentSockets:
    """One socket per registered agent, re-made when its runtime dir is."""

    def __init__(self, config: Config, context: Context, tracker: conns.Tracker) -> None:
        self.config = config
        self.context = context
        self.tracker = tracker
        self.pool = conns.Pool(conns.agent_pool_cap())
        self.runtime_root = config.host.runtime_root
        self.listening: dict[str, _AgentListener] = {}

    def _rel(self, name: str) -> PurePosixPath:
        spec = self.config.agent(name)
        return PurePosixPath(self.config.runtime_dir(spec).relative_to(self.runtime_root))

    async def refresh(self) -> None:
        names = registry.scan(self.config).registered
        for gone in sorted(set(self.listening) - set(names)):
            await self._close(gone)
        if not names:
            return
        try:
            staging = sockets.open_staging(self.runtime_root)
        except (OSError, HivegenError) as exc:
            log.warning("cannot use %s: %s", self.runtime_root / sockets.STAGING, exc)
            return
        try:
            for name in names:
                await self._refresh_one(name, staging)
        finally:
            os.close(staging)

    async def _refresh_one(self, name: str, staging: int) -> None:
        try:
            fd = safepath.open_dir(self.runtime_root, self._rel(name))
        except (OSError, HivegenError):
            # No runtime dir (not started since a reboot) or an unsafe one: no socket
            # until a start makes it as it should be.
            if name in self.listening:
                await self._close(name)
            return
        try:
            current = self.listening.get(name)
            if current is not None:
                if sockets.still_there(fd, sockets.SOCKET_NAME, current.bound):
                    return
                log.info("socket of %s was removed or replaced: making it again", name)
                await self._close(name, unlink=False)
            try:
                bound = sockets.bind_in(fd, sockets.SOCKET_NAME, staging, 0o666)
            except OSError as exc:
                log.warning("cannot make %s's socket: %s", name, exc.strerror)
                return
        finally:
            os.close(fd)
        spec = self.config.agent(name)
        app = self.tracker.watch(api.make_app(api.Identity(name, spec.role), self.context))
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        assert runner.server is not None
        gate = conns.Gate(
            bound.sock,
            runner.server,
            label=f"{name}'s socket",
            cap=limits.AGENT_CONNECTIONS,
            tracker=self.tracker,
            pool=self.pool,
        )
        gate.start()
        self.listening[name] = _AgentListener(bound, runner, gate)
        log.info("listening for %s on %s", name, self.config.runtime_dir(spec) / "hive.sock")

    async def _close(self, name: str, *, unlink: bool = True) -> None:
        listener = self.listening.pop(name)
        await listener.gate.stop()
        await listener.runner.cleanup()
        if unlink:
            sockets.remove(self.runtime_root, self._rel(name), sockets.SOCKET_NAME, listener.bound)

    async def close_all(self) -> None:
        for name in sorted(self.listening):
            await self._close(name)


def _notify(state: str) -> None:
    """sd_notify(3) for Type=notify, without libsystemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
    ):
        sock.connect(address)
        sock.sendall(state.encode())


def _dashboard_socket(path: Path) -> sockets.Bound:
    """The operator's socket: 0600 in a directory that is root's alone."""
    parent = path.parent
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = safepath.open_root(parent)
    try:
        os.fchmod(fd, 0o700)
        # A stale socket of an earlier run: this process holds the hive's serve lock.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.name, dir_fd=fd)
        return sockets.bind_in(fd, path.name, fd, 0o600)
    finally:
        os.close(fd)


def _remove_dashboard_socket(path: Path, bound: sockets.Bound) -> None:
    """Unlink the dashboard's socket if it is still this process's (never another's)."""
    with contextlib.suppress(OSError, HivegenError):
        fd = safepath.open_root(path.parent)
        try:
            if sockets.still_there(fd, path.name, bound):
                os.unlink(path.name, dir_fd=fd)
        finally:
            os.close(fd)


@dataclass(slots=True)
class _Dashboards:
    """The dashboards' runners and gates, and the root-only socket (to remove if ours)."""

    runners: list[web.AppRunner] = field(default_factory=list)
    gates: list[conns.Gate] = field(default_factory=list)
    unix: sockets.Bound | None = None

    async def serve(
        self, app: web.Application, sock: socket.socket, label: str, tracker: conns.Tracker
    ) -> None:
        runner = web.AppRunner(
            tracker.watch(app), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        self.runners.append(runner)
        assert runner.server is not None
        gate = conns.Gate(
            sock, runner.server, label=label, cap=limits.DASHBOARD_CONNECTIONS, tracker=tracker
        )
        gate.start()
        self.gates.append(gate)

    async def close(self, path: Path) -> None:
        for gate in self.gates:
            await gate.stop()
        for runner in reversed(self.runners):
            await runner.cleanup()
        if self.unix is not None:
            _remove_dashboard_socket(path, self.unix)


def _tcp_socket(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    try:
        return socket.create_server((listen.host, listen.port), family=family, backlog=128)
    except OSError as exc:
        raise HivegenError(
            f"cannot listen on {listen.url}: {exc.strerror}",
            hint="choose another --listen address or port",
        ) from exc


async def _start_dashboards(
    context: Context, options: ServeOptions, dashboards: _Dashboards, tracker: conns.Tracker
) -> str | None:
    """The root-only socket's dashboard, and the TCP one if asked for (its URL)."""
    guard_unix = auth.Guard(token=None, extra_hosts=options.allowed_hosts)
    dashboards.unix = _dashboard_socket(options.dashboard_socket)
    await dashboards.serve(
        dashboard.make_app(context, guard_unix), dashboards.unix.sock, "the dashboard", tracker
    )
    if options.listen is None:
        return None
    token = auth.load_or_make_token(options.token_file)
    hosts = (*options.allowed_hosts, options.listen.host)
    sock = _tcp_socket(options.listen)
    port = sock.getsockname()[1]  # the one picked, for port 0
    app = dashboard.make_app(context, auth.Guard(token=token, extra_hosts=hosts))
    await dashboards.serve(app, sock, "the TCP dashboard", tracker)
    return Listen(options.listen.host, port).url


async def _serve(
    config: Config,
    options: ServeOptions,
    make_hive: HiveFactory,
    on_ready: Callable[[Ready], None] | None,
    stop_event: threading.Event | None,
) -> Stopped:
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[Stopped] = loop.create_future()

    def stop(why: Stopped) -> None:
        if not stopped.done():
            stopped.set_result(why)

    if threading.current_thread() is threading.main_thread():
        loop.add_signal_handler(signal.SIGTERM, stop, Stopped.TERMINATED)
        loop.add_signal_handler(signal.SIGINT, stop, Stopped.INTERRUPTED)
    context = Context(config, make_hive)
    tracker = conns.Tracker()
    agents = AgentSockets(config, context, tracker)
    dashboards = _Dashboards()
    lock = sockets.hold_serve_lock(config.host.runtime_root)
    try:
        url = await _start_dashboards(context, options, dashboards, tracker)
        await agents.refresh()
        if on_ready is not None:
            on_ready(
                Ready(
                    options.dashboard_socket,
                    url,
                    options.token_file if url else None,
                    tuple(sorted(agents.listening)),
                )
            )
        _notify("READY=1")
        while not stopped.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(stopped), options.poll_interval)
            tracker.sweep()
            if stop_event is not None and stop_event.is_set():
                stop(Stopped.TERMINATED)
            if not stopped.done():
                try:
                    await agents.refresh()
                except (OSError, HivegenError) as exc:
                    log.warning("checking the agents' sockets failed: %s", exc)
        _notify("STOPPING=1")
        return stopped.result()
    finally:
        await agents.close_all()
        await dashboards.close(options.dashboard_socket)
        os.close(lock)


def serve_forever(
    config: Config,
    options: ServeOptions,
    make_hive: HiveFactory,
    on_ready: Callable[[Ready], None] | None = None,
    stop_event: threading.Event | None = None,
) -> Stopped:
    return asyncio.run(_serve(config, options, make_hive, on_ready, stop_event))
