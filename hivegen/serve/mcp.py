"""The socket's requests as MCP tools (`hivegen mcp`, inside a container, over stdio).

A thin forwarder: every tool call is one request to `/run/hive/hive.sock`, so the
server decides exactly as it does for curl (who asks is still the socket). The tools
offered are those the socket says it takes (`GET /`): a sub-agent is not shown
`propose`. This module is the protocol (JSON-RPC 2.0 messages in, replies out); the
CLI owns stdin and stdout.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hivegen import __version__
from hivegen.serve.client import Answer, ask

PROTOCOL_VERSION = "2025-06-18"
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602

Asker = Callable[[str, str, object], Answer]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    endpoint: str  # as `GET /` lists it
    description: str
    properties: dict[str, dict[str, str]]
    required: tuple[str, ...] = ()

    def schema(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "inputSchema": {
                "type": "object",
                "properties": self.properties,
                "required": list(self.required),
                "additionalProperties": False,
            },
        }


_AGENT = {"type": "string", "description": "an agent's name"}
TOOLS = (
    Tool(
        "hive_status",
        "GET /status",
        "The hive's agents and their states (a sub-agent sees only itself).",
        {"agent": _AGENT},
    ),
    Tool(
        "hive_proposals",
        "GET /proposals",
        "Proposals, newest first, with their status and the operator's note.",
        {"agent": _AGENT},
    ),
    Tool(
        "hive_proposal",
        "GET /proposals/ID?wait=SECONDS",
        "One proposal; with wait, held until the operator decides (at most 300 s).",
        {
            "id": {"type": "integer", "description": "the proposal's id"},
            "wait": {"type": "number", "description": "seconds to wait for a decision"},
        },
        ("id",),
    ),
    Tool(
        "hive_propose",
        "POST /propose",
        "Ask the operator to deploy a commit of an agent's proposed repo (default: the "
        "tip of its main). The operator reviews the diff and approves or denies it.",
        {"agent": _AGENT, "commit": {"type": "string", "description": "a commit id"}},
        ("agent",),
    ),
    Tool(
        "hive_request_spawn",
        "POST /request-spawn",
        "Ask the operator for a new agent.",
        {"name": {"type": "string", "description": "the new agent's name"}},
        ("name",),
    ),
    Tool(
        "hive_spawn_requests",
        "GET /spawn-requests",
        "The spawn requests made and the operator's answers.",
        {},
    ),
)


class ParamsError(Exception):
    pass


def _request(tool: Tool, arguments: dict[str, Any]) -> tuple[str, str, object]:
    unknown = sorted(set(arguments) - set(tool.properties))
    if unknown:
        raise ParamsError(f"unknown argument {unknown[0]!r}")
    for name in tool.required:
        if name not in arguments:
            raise ParamsError(f"argument {name!r} is required")
    for name, value in arguments.items():
        kind = tool.properties[name]["type"]
        ok = {
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
        }[kind]
        if not ok:
            raise ParamsError(f"argument {name!r} must be a {kind}")
    method, _, path = tool.endpoint.partition(" ")
    if method == "POST":
        return method, path, arguments
    if tool.name == "hive_proposal":
        path = f"/proposals/{arguments['id']}"
        if "wait" in arguments:
            path += f"?wait={float(arguments['wait']):g}"
    elif "agent" in arguments:
        path += f"?agent={quote(arguments['agent'], safe='')}"
    return method, path, None


class McpServer:
    def __init__(self, socket: Path, asker: Asker | None = None) -> None:
        self.socket = socket
        self.ask: Asker = asker or (lambda method, url, body: ask(socket, method, url, body))
        self._tools: tuple[Tool, ...] | None = None

    def tools(self) -> tuple[Tool, ...]:
        """The tools this socket takes (asked once)."""
        if self._tools is None:
            offered = self.ask("GET", "/", None).json()
            endpoints = offered.get("endpoints", []) if isinstance(offered, dict) else []
            self._tools = tuple(t for t in TOOLS if t.endpoint in endpoints)
        return self._tools

    def handle(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """The reply to one JSON-RPC message (None for a notification)."""
        method = message.get("method")
        msg_id = message.get("id")
        if msg_id is None:
            return None  # notifications (initialized, cancelled) need no answer
        params = message.get("params") or {}
        match method:
            case "initialize":
                version = params.get("protocolVersion") or PROTOCOL_VERSION
                return _result(
                    msg_id,
                    {
                        "protocolVersion": version,
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "hivegen", "version": __version__},
                    },
                )
            case "ping":
                return _result(msg_id, {})
            case "tools/list":
                return _result(msg_id, {"tools": [t.schema() for t in self.tools()]})
            case "tools/call":
                return self._call(msg_id, params)
            case _:
                return _error(msg_id, METHOD_NOT_FOUND, f"no method {method!r}")

    def _call(self, msg_id: object, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("name")
        tool = next((t for t in self.tools() if t.name == name), None)
        if tool is None:
            return _error(msg_id, INVALID_PARAMS, f"no tool {name!r} on this socket")
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            return _error(msg_id, INVALID_PARAMS, "arguments must be an object")
        try:
            method, url, body = _request(tool, arguments)
        except ParamsError as exc:
            return _error(msg_id, INVALID_PARAMS, str(exc))
        try:
            answer = self.ask(method, url, body)
        except OSError as exc:
            text = f"cannot reach {self.socket}: {exc.strerror or exc}"
            return _result(msg_id, {"content": [{"type": "text", "text": text}], "isError": True})
        text = answer.body.decode(errors="replace")
        return _result(
            msg_id,
            {"content": [{"type": "text", "text": text}], "isError": answer.status >= 400},
        )


def _result(msg_id: object, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def _error(msg_id: object, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


def parse(line: str) -> dict[str, Any] | None:
    """One line of input as a message, or None if it is not a JSON object."""
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None
