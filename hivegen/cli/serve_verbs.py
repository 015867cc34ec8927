"""serve (the containers' sockets and the dashboard) and mcp (a container's socket as
MCP tools), and the Hive each request the server runs gets."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from hivegen.cli.common import PROG, _load_config
from hivegen.errors import ExitCode, UsageError


def _serve_hive_factory(config: Any) -> Any:
    """A Hive for each verb the server runs: it waits for the hive lock, as the CLI does."""
    import os

    from hivegen.hive import Hive, LockPolicy

    log = logging.getLogger("hivegen.serve")

    def make_hive(on_output: Callable[[str], None] | None) -> Hive:
        return Hive(
            config,
            LockPolicy(
                wait=True,
                on_wait=lambda holder: log.info("waiting for the hive lock (%s)", holder),
                holder=f"{PROG} serve (pid {os.getpid()})",
            ),
            on_output=on_output,
        )

    return make_hive


def _cmd_mcp(args: argparse.Namespace) -> int:
    from hivegen.serve.mcp import McpServer, parse

    server = McpServer(args.socket)
    for line in sys.stdin:
        if not line.strip():
            continue
        message = parse(line)
        if message is None:
            reply: dict[str, object] | None = {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32700, "message": "not a JSON-RPC message"},
            }
        else:
            try:
                reply = server.handle(message)
            except OSError as exc:
                reply = {
                    "jsonrpc": "2.0",
                    "id": message.get("id"),
                    "error": {"code": -32603, "message": f"cannot reach {args.socket}: {exc}"},
                }
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    return ExitCode.OK


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from hivegen import serve
    from hivegen.config import HostRuntime

    config = _load_config(args)
    if config.host.runtime is HostRuntime.NATIVE and os.geteuid() != 0:
        raise UsageError("must run as root: hivegen serve owns the hive", hint=f"sudo {PROG} serve")
    options = serve.ServeOptions(
        dashboard_socket=args.socket or serve.default_dashboard_socket(config),
        token_file=args.token_file or serve.default_token_file(config),
        listen=serve.parse_listen(args.listen) if args.listen else None,
        allowed_hosts=tuple(args.allow_host),
    )
    # The server's own log lines (requests, jobs) go to stderr: the journal, as a service.
    # (-v adds every command hivegen runs, as for any verb.)
    log = logging.getLogger("hivegen.serve")
    log.setLevel(logging.INFO)

    def ready(where: serve.Ready) -> None:
        log.info("dashboard on unix socket %s", where.dashboard_socket)
        if where.dashboard_url:
            log.info(
                "dashboard on %s (log in with the token in %s)",
                where.dashboard_url,
                where.token_file,
            )
        names = ", ".join(where.agents) or "none yet"
        log.info("agent sockets: %s", names)

    stopped = serve.run(config, options, _serve_hive_factory(config), ready)
    log.info("stopped (%s)", stopped)
    return ExitCode.INTERRUPTED if stopped is serve.Stopped.INTERRUPTED else ExitCode.OK
