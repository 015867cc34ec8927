"""The long-running verbs' arguments and help: serve, mcp (handlers: serve_verbs) and
demo (demo_verb); then the last verbs --help lists, completion and man (shell_verbs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hivegen.cli.common import _Formatter, _Lazy
from hivegen.cli.shell_verbs import _add_shell_commands


def _add_serve_commands(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="the containers' request sockets and the operator's dashboard",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description="Run until stopped (SIGTERM, Ctrl-C), as hivegen-serve.service does:\n"
        "- a socket for every agent, <runtime dir>/hive.sock, seen inside as\n"
        "  /run/hive/hive.sock. Who asks is the socket a request arrives on: the\n"
        "  manager may propose and ask for a spawn, every agent may read its own\n"
        "  status and proposals, and no container can approve anything. From inside:\n"
        "    curl --unix-socket /run/hive/hive.sock http://hive/\n"
        "- the dashboard, on a unix socket only root can open (default\n"
        "  <runtime root>/../hivegen/dashboard.sock; reach it with\n"
        "  ssh -L 7000:/run/hivegen/dashboard.sock HOST, then http://localhost:7000).\n"
        "  --listen also serves it on TCP, behind the token in --token-file (made\n"
        "  if missing, root's alone): every agent can reach the host's ports.\n"
        "The CLI works beside it: both take the hive lock, and each sees the other's\n"
        "proposals and decisions.",
        epilog="examples:\n  hivegen serve\n  hivegen serve --listen 127.0.0.1:7000",
    )
    serve.add_argument(
        "--socket",
        metavar="PATH",
        type=Path,
        help="the dashboard's unix socket (default: beside the runtime root, "
        "hivegen/dashboard.sock)",
    )
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="also serve the dashboard on TCP, behind the token (port 0: any free port)",
    )
    serve.add_argument(
        "--token-file",
        metavar="PATH",
        type=Path,
        help="the dashboard token for --listen (default: <state root>/dashboard.token)",
    )
    serve.add_argument(
        "--allow-host",
        metavar="NAME",
        action="append",
        default=[],
        help="a host name the dashboard answers to besides localhost and the listen "
        "address (repeatable)",
    )
    serve.set_defaults(handler=_Lazy("serve_verbs", "_cmd_serve"))
    mcp = sub.add_parser(
        "mcp",
        help="the socket's requests as MCP tools, over stdio (inside a container)",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description="An MCP server on stdin/stdout for an agent that speaks MCP: each tool\n"
        "call is one request to the container's hivegen socket, so the server decides\n"
        "as for curl. The tools are those the socket takes: every agent gets\n"
        "hive_status, hive_proposals and hive_proposal (which can wait for a decision);\n"
        "the manager also hive_propose, hive_request_spawn and hive_spawn_requests.",
        epilog='example (an MCP client\'s config):\n  {"command": "hivegen", "args": ["mcp"]}',
    )
    mcp.add_argument(
        "--socket",
        metavar="PATH",
        type=Path,
        default=Path("/run/hive/hive.sock"),
        help="the socket to forward to (default: /run/hive/hive.sock)",
    )
    mcp.set_defaults(handler=_Lazy("serve_verbs", "_cmd_mcp"))
    demo = sub.add_parser(
        "demo",
        help="build a throwaway demo hive and show each step",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description="Build a throwaway hive in DIR on hivegen's simulated host (no NixOS\n"
        "needed, but Nix is): the manager and two agents, spawned and shown\n"
        "with `status`. Every step prints the hivegen command it runs.",
        epilog="example:\n  hivegen demo /tmp/hive-demo",
    )
    demo.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        default="hive-demo",
        help="where to build it (default: ./hive-demo; an earlier demo "
        "there is replaced, anything else is refused)",
    )
    demo.set_defaults(handler=_Lazy("demo_verb", "_cmd_demo"))
    _add_shell_commands(sub)
