"""The request API a container reaches at `/run/hive/hive.sock` (HTTP/1.1, JSON).

Each agent's socket has an application of its own, made with its `Identity`: the
handlers ask the identity who is asking, and no request field can say otherwise (a
body with an unknown field is refused, so a client that believes it can name itself
learns that it cannot). Endpoints:

    GET  /                      what this socket offers, and who it belongs to
    GET  /status                the hive (manager) or this agent (sub-agent)
    GET  /proposals[?agent=N]   proposals, newest first (a sub-agent: its own)
    GET  /proposals/ID[?wait=S] one proposal; with wait, held open until it is decided
    POST /propose               manager: {"agent": N, "commit": SHA?} (default: tip of main)
    POST /request-spawn         manager: {"name": N}, queued for the operator
    GET  /spawn-requests        manager: the requests and their answers

Every refusal is `{"error": ..., "hint": ...}` with an HTTP status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from hivegen import status as status_mod
from hivegen.errors import HivegenError, UsageError
from hivegen.names import Role
from hivegen.proposals import Proposals
from hivegen.sanitize import terminal_line
from hivegen.serve import conns, limits
from hivegen.serve.context import Context
from hivegen.spawnrequests import SpawnRequests
from hivegen.store import ProposalStatus, Store, proposal_json

log = logging.getLogger("hivegen.serve")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Identity:
    agent: str
    role: Role

    @property
    def is_manager(self) -> bool:
        return self.role is Role.MANAGER


@dataclass(slots=True)
class Quota:
    bucket: limits.TokenBucket = field(default_factory=limits.TokenBucket)
    waiters: int = 0


IDENTITY = web.AppKey("identity", Identity)
CONTEXT = web.AppKey("context", Context)
QUOTA = web.AppKey("quota", Quota)

OPERATOR_VERBS = ("approve", "deny", "rollback", "spawn", "destroy", "stop", "start")


def refuse(status: int, message: str, hint: str | None = None) -> web.Response:
    body: dict[str, object] = {"error": message}
    if hint:
        body["hint"] = hint
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v) + "\n")


def _reply(value: object, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=lambda v: json.dumps(v, indent=2) + "\n")


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    identity = request.app[IDENTITY]
    wait = request.app[QUOTA].bucket.take()
    if wait:
        return refuse(
            429,
            f"too many requests from {identity.agent} (at most {limits.BURST} at once, "
            f"{limits.RATE:g} a second after that)",
            hint=f"retry in {wait:.1f}s",
        )
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return refuse(413, f"request body too large (at most {limits.MAX_BODY} bytes)")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return refuse(exc.status, exc.reason)
        raise
    except UsageError as exc:
        return refuse(400, exc.message, exc.hint)
    except HivegenError as exc:
        log.warning("request from %s failed: %s", identity.agent, terminal_line(exc.message))
        return refuse(409, exc.message, exc.hint)
    except Exception:  # a bug must not kill the server, nor show the container a trace
        log.exception(
            "request from %s: %s %s crashed", identity.agent, request.method, request.path
        )
        return refuse(500, "internal error (the operator finds it in hivegen serve's log)")


async def _body(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    # Whatever the Content-Type says (curl -d sends a form type), the body is JSON.
    # Bounded by client_max_size (413 above it, chunked or not) and in time (408).
    raw = await conns.within_body_timeout(request.read())
    try:
        data: Any = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError("request body must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise UsageError(
            f"unknown field {unknown[0]!r} (allowed: {', '.join(allowed)})",
            hint="who asks is the socket the request arrives on; no field can change it",
        )
    for key, value in data.items():
        if not isinstance(value, str):
            raise UsageError(f"field {key!r} must be a string")
    return dict(data)


def _manager_only(identity: Identity, what: str) -> web.Response | None:
    if identity.is_manager:
        return None
    return refuse(403, f"{what} is the manager's: {identity.agent}'s socket cannot ask it")


async def index(request: web.Request) -> web.StreamResponse:
    identity = request.app[IDENTITY]
    endpoints = ["GET /status", "GET /proposals", "GET /proposals/ID?wait=SECONDS"]
    if identity.is_manager:
        endpoints += ["POST /propose", "POST /request-spawn", "GET /spawn-requests"]
    return _reply({"agent": identity.agent, "role": str(identity.role), "endpoints": endpoints})


async def get_status(request: web.Request) -> web.StreamResponse:
    identity = request.app[IDENTITY]
    wanted = request.query.get("agent")
    if wanted is not None and wanted != identity.agent and not identity.is_manager:
        return refuse(403, f"{identity.agent} may only see its own status")
    statuses = await request.app[CONTEXT].call(status_mod.collect)
    if not identity.is_manager:
        wanted = identity.agent
    shown = [s for s in statuses if wanted is None or s.name == wanted]
    if wanted is not None and not shown:
        return refuse(404, f"no agent named {wanted!r}")
    return _reply([status_mod.status_json(s) for s in shown])


def _store(request: web.Request) -> Store:
    return Store(request.app[CONTEXT].config.layout.database)


async def list_proposals(request: web.Request) -> web.StreamResponse:
    identity = request.app[IDENTITY]
    wanted = request.query.get("agent")
    if wanted is not None and wanted != identity.agent and not identity.is_manager:
        return refuse(403, f"{identity.agent} may only see its own proposals")
    if not identity.is_manager:
        wanted = identity.agent

    def read(hive: Any) -> list[dict[str, object]]:
        from hivegen import registry

        store = Store(hive.layout.database)
        agents = [wanted] if wanted else list(registry.scan(hive.config).registered)
        found = [p for agent in agents for p in store.of_agent(agent)]
        return [proposal_json(p) for p in sorted(found, key=lambda p: -p.id)][:200]

    return _reply(await request.app[CONTEXT].call(read))


async def get_proposal(request: web.Request) -> web.StreamResponse:
    identity = request.app[IDENTITY]
    quota = request.app[QUOTA]
    try:
        proposal_id = int(request.match_info["id"])
        wait = float(request.query.get("wait", "0"))
    except ValueError:
        return refuse(400, "proposal id and wait must be numbers")
    wait = max(0.0, min(wait, limits.MAX_WAIT))
    store = _store(request)
    not_found = refuse(404, f"no proposal {proposal_id} for {identity.agent}")

    def visible() -> Any:
        try:
            proposal = store.get(proposal_id)
        except UsageError:
            return None
        if not identity.is_manager and proposal.agent != identity.agent:
            return None  # another agent's: not even its existence is told
        return proposal

    proposal = await asyncio.to_thread(visible)
    if proposal is None:
        return not_found
    if wait and proposal.status in (ProposalStatus.PENDING, ProposalStatus.BUILDING):
        if quota.waiters >= limits.MAX_WAITERS:
            return refuse(429, f"{identity.agent} already has {limits.MAX_WAITERS} waits open")
        quota.waiters += 1
        try:
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                proposal = await asyncio.to_thread(visible)
                if proposal is None or proposal.status not in (
                    ProposalStatus.PENDING,
                    ProposalStatus.BUILDING,
                ):
                    break
        finally:
            quota.waiters -= 1
        if proposal is None:
            return not_found
    return _reply(proposal_json(proposal))


async def propose(request: web.Request) -> web.StreamResponse:
    identity = request.app[IDENTITY]
    if (refused := _manager_only(identity, "propose")) is not None:
        return refused
    body = await _body(request, ("agent", "commit"))
    agent = body.get("agent")
    if not agent:
        return refuse(400, "field 'agent' is required (the agent whose config to propose)")
    commit = body.get("commit") or "main"
    waiting = Store(request.app[CONTEXT].config.layout.database).pending_counts().get(agent, 0)
    if waiting >= limits.MAX_PENDING_PER_AGENT:
        return refuse(
            429,
            f"{agent} already has {waiting} proposals waiting for the operator "
            f"(at most {limits.MAX_PENDING_PER_AGENT})",
            hint="wait for a decision (GET /proposals/ID?wait=60)",
        )

    def make(hive: Any) -> dict[str, object]:
        proposals = Proposals(hive)
        proposal = proposals.propose(agent, commit)
        return {**proposal_json(proposal), "subject": proposals.subject(proposal)}

    made = await request.app[CONTEXT].call(make)
    log.info(
        "%s proposed %s %s (proposal %s)",
        identity.agent,
        terminal_line(agent),
        str(made["sha"])[:12],
        made["id"],
    )
    return _reply(made, status=201)


async def request_spawn(request: web.Request) -> web.StreamResponse:
    identity = request.app[IDENTITY]
    if (refused := _manager_only(identity, "request-spawn")) is not None:
        return refused
    body = await _body(request, ("name",))
    name = body.get("name")
    if not name:
        return refuse(400, "field 'name' is required (the new agent's name)")

    def add(hive: Any) -> dict[str, object]:
        with hive.locked():
            return SpawnRequests(hive.config).add(name).as_json()

    queued = await request.app[CONTEXT].call(add)
    log.info("%s asked for a spawn of %s", identity.agent, terminal_line(name))
    return _reply(queued, status=202)


async def spawn_requests(request: web.Request) -> web.StreamResponse:
    identity = request.app[IDENTITY]
    if (refused := _manager_only(identity, "spawn-requests")) is not None:
        return refused
    config = request.app[CONTEXT].config
    found = await asyncio.to_thread(SpawnRequests(config).all)
    return _reply([r.as_json() for r in found])


def _operator_only(verb: str) -> Handler:
    async def refused(request: web.Request) -> web.StreamResponse:
        return refuse(
            403,
            f"{verb} is the operator's decision: no container's socket can ask for it",
            hint="the operator decides with hivegen or the dashboard",
        )

    return refused


async def not_found(request: web.Request) -> web.StreamResponse:
    return refuse(404, f"no such request: {request.method} {terminal_line(request.path)}")


def make_app(identity: Identity, context: Context) -> web.Application:
    app = web.Application(client_max_size=limits.MAX_BODY, middlewares=[_guard])
    app[IDENTITY] = identity
    app[CONTEXT] = context
    app[QUOTA] = Quota()
    app.router.add_get("/", index)
    app.router.add_get("/status", get_status)
    app.router.add_get("/proposals", list_proposals)
    app.router.add_get(r"/proposals/{id}", get_proposal)
    app.router.add_post("/propose", propose)
    app.router.add_post("/request-spawn", request_spawn)
    app.router.add_get("/spawn-requests", spawn_requests)
    for verb in OPERATOR_VERBS:
        app.router.add_route("*", f"/{verb}", _operator_only(verb))
        app.router.add_route("*", f"/proposals/{{id}}/{verb}", _operator_only(verb))
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
