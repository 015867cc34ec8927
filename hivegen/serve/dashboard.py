"""The operator's dashboard: the hive, pending proposals with their diffs, decisions,
history with rollback, live build output and doctor's findings.

Pages are Jinja2 templates (templates/dashboard) with autoescape, and every string goes
through `sanitize.terminal` first (the template's finalize): what the manager wrote shows
as text, its control characters as visible escapes. The one script is a static file
that streams a job's output with EventSource and adds it with `textContent`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

from hivegen import highlight, sanitize
from hivegen.errors import HivegenError, UsageError
from hivegen.proposals import Proposals, validate_note
from hivegen.serve import conns
from hivegen.serve.auth import LOCAL_SESSION, SECURITY_HEADERS, SESSION_COOKIE, Guard
from hivegen.serve.context import Context, Job
from hivegen.spawnrequests import RequestState, SpawnRequests
from hivegen.store import ProposalStatus, Store

log = logging.getLogger("hivegen.serve")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONTEXT = web.AppKey("context", Context)
GUARD = web.AppKey("guard", Guard)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
SESSION = "hivegen.session"
MAX_FORM = 64 * 1024
OPEN_PATHS = ("/login", "/static/")


def _finalize(value: object) -> object:
    # Markup is the dashboard's own HTML (a highlighted diff); everything else is text.
    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return sanitize.terminal(value)


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("hivegen", "templates/dashboard"),
        autoescape=True,
        finalize=_finalize,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["short"] = lambda sha, n=12: (sha or "-")[:n]
    return env


def _render(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    guard = request.app[GUARD]
    session = request.get(SESSION)
    text = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            csrf=guard.csrf(session) if session else "",
            logged_in=guard.needs_login and session is not None,
            **values,
        )
    )
    return web.Response(text=text, status=status, content_type="text/html")


def _error_page(
    request: web.Request, status: int, message: str, hint: str | None = None
) -> web.Response:
    return _render(request, "error.html.j2", status=status, message=message, hint=hint)


@web.middleware
async def _checks(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app[GUARD]
    try:
        response = await _checked(request, handler, guard)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error_page(request, exc.status, exc.reason)
    except UsageError as exc:
        response = _error_page(request, 400, exc.message, exc.hint)
    except HivegenError as exc:
        response = _error_page(request, 409, exc.message, exc.hint)
    response.headers.update(SECURITY_HEADERS)
    return response


async def _checked(request: web.Request, handler: Handler, guard: Guard) -> web.StreamResponse:
    if not guard.host_allowed(request.headers.get("Host", "")):
        # Before anything else: a rebound DNS name must not even see the login page.
        return web.Response(status=421, text="unexpected Host header\n")
    session = guard.session_of(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        request[SESSION] = session
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return _error_page(request, 403, "refused: the form came from another site")
    if session is None and not request.path.startswith(OPEN_PATHS):
        if request.method == "GET":
            raise web.HTTPSeeOther("/login")
        return _error_page(request, 403, "log in first")
    if request.method == "POST" and session is not None:
        form = await conns.within_body_timeout(request.post())
        if not guard.csrf_ok(session, str(form.get("csrf", ""))):
            return _error_page(request, 403, "refused: the form's CSRF token is missing or stale")
    return await handler(request)


# -- login ------------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.StreamResponse:
    if not request.app[GUARD].needs_login:
        raise web.HTTPSeeOther("/")
    return _render(request, "login.html.j2", failed=False)


async def login(request: web.Request) -> web.StreamResponse:
    guard = request.app[GUARD]
    if not guard.needs_login:
        raise web.HTTPSeeOther("/")
    if guard.too_many_failures():
        return _error_page(request, 429, "too many failed logins: wait a minute")
    form = await conns.within_body_timeout(request.post())
    session = guard.login(str(form.get("token", "")))
    if session is None:
        log.warning("failed dashboard login from %s", request.remote)
        return _render(request, "login.html.j2", status=403, failed=True)
    response = web.HTTPSeeOther("/")
    response.set_cookie(
        SESSION_COOKIE, session, httponly=True, samesite="Strict", max_age=12 * 3600, path="/"
    )
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    session = request[SESSION]
    if session != LOCAL_SESSION:
        request.app[GUARD].logout(session)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


# -- pages ------------------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    from hivegen import status as status_mod

    context = request.app[CONTEXT]

    def read(hive: Any) -> dict[str, Any]:
        return {
            "agents": status_mod.collect(hive),
            "pending": Proposals(hive).pending(),
            "spawn_requests": SpawnRequests(hive.config).queued(),
        }

    values = await context.call(read)
    jobs = sorted(context.jobs.values(), key=lambda j: -j.id)[:10]
    return _render(
        request, "index.html.j2", jobs=jobs, notice=request.query.get("notice"), **values
    )


def _proposal_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound(reason="no such proposal") from None


async def proposal_page(request: web.Request) -> web.StreamResponse:
    proposal_id = _proposal_id(request)

    def read(hive: Any) -> dict[str, Any]:
        proposals = Proposals(hive)
        proposal = proposals.store.get(proposal_id)
        diff = ""
        if proposal.fetched_sha and proposal.status is ProposalStatus.PENDING:
            diff = proposals.diff(proposal_id)
        return {
            "proposal": proposal,
            "subject": proposals.subject(proposal),
            "superseded": proposal.status is ProposalStatus.PENDING
            and proposals.superseded(proposal),
            "flake": proposals.flake_report(proposal) if proposal.fetched_sha else None,
            "diff": Markup(highlight.html(diff, highlight.Language.DIFF)) if diff else None,  # noqa: S704
        }

    values = await request.app[CONTEXT].call(read)
    return _render(request, "proposal.html.j2", **values)


async def _form(request: web.Request) -> dict[str, str]:
    form = await conns.within_body_timeout(request.post())
    return {k: str(v) for k, v in form.items() if isinstance(v, str)}


async def approve(request: web.Request) -> web.StreamResponse:
    proposal_id = _proposal_id(request)
    form = await _form(request)
    force = form.get("force") == "yes"
    context = request.app[CONTEXT]
    proposal = await asyncio.to_thread(Store(context.config.layout.database).get, proposal_id)

    def run(hive: Any) -> str:
        # A failed build (BuildFailed) says what was put back: the job shows it.
        deployment = Proposals(hive).approve(proposal_id, force=force)
        return "\n".join([f"deployed {proposal.agent} {deployment.sha[:12]}", *deployment.steps])

    job = context.start_job(
        f"approve proposal {proposal_id} ({proposal.agent})",
        proposal.agent,
        run,
        next_url=f"/agents/{proposal.agent}",
    )
    log.info("dashboard: approve %d (job %d)", proposal_id, job.id)
    raise web.HTTPSeeOther(f"/jobs/{job.id}")


async def deny(request: web.Request) -> web.StreamResponse:
    proposal_id = _proposal_id(request)
    note = validate_note((await _form(request)).get("note", ""))
    denied = await request.app[CONTEXT].call(lambda hive: Proposals(hive).deny(proposal_id, note))
    log.info("dashboard: denied %d", proposal_id)
    raise web.HTTPSeeOther(f"/?notice=proposal+{denied.id}+denied")


async def agent_page(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]

    def read(hive: Any) -> dict[str, Any]:
        from hivegen import registry

        hive.registered(name)
        deployed = registry.deployed(hive.layout.applied(name) / ".git")
        return {"history": Proposals(hive).history(name), "current": deployed.tag}

    values = await request.app[CONTEXT].call(read)
    return _render(request, "agent.html.j2", name=name, **values)


async def rollback(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    to = (await _form(request)).get("to", "")
    await request.app[CONTEXT].call(lambda hive: hive.registered(name))

    def run(hive: Any) -> str:
        deployment = Proposals(hive).rollback(name, to)
        return "\n".join([f"rolled {name} back to {to} ({deployment.sha[:12]})", *deployment.steps])

    job = request.app[CONTEXT].start_job(
        f"roll {name} back to {to}", name, run, next_url=f"/agents/{name}"
    )
    raise web.HTTPSeeOther(f"/jobs/{job.id}")


async def spawn(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    config = request.app[CONTEXT].config
    wanted = await asyncio.to_thread(SpawnRequests(config).get, name)
    if wanted is None or wanted.state is not RequestState.QUEUED:
        raise web.HTTPNotFound(reason=f"no queued spawn request for {name}")

    def run(hive: Any) -> str:
        return "\n".join([f"spawned {name}", *hive.spawn(name).steps])

    job = request.app[CONTEXT].start_job(f"spawn {name}", name, run, next_url=f"/agents/{name}")
    raise web.HTTPSeeOther(f"/jobs/{job.id}")


async def dismiss(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    note = validate_note((await _form(request)).get("note", ""))

    def run(hive: Any) -> object:
        with hive.locked():
            return SpawnRequests(hive.config).resolve(name, RequestState.DISMISSED, note)

    if await request.app[CONTEXT].call(run) is None:
        raise web.HTTPNotFound(reason=f"no queued spawn request for {name}")
    raise web.HTTPSeeOther(f"/?notice=spawn+of+{name}+dismissed")


def _job(request: web.Request) -> Job:
    try:
        return request.app[CONTEXT].jobs[int(request.match_info["id"])]
    except (KeyError, ValueError):
        raise web.HTTPNotFound(
            reason="no such job (jobs are kept until the server restarts)"
        ) from None


async def job_page(request: web.Request) -> web.StreamResponse:
    return _render(request, "job.html.j2", job=_job(request))


def _event(kind: str, data: object, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def job_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: every line of the job's output, then its result."""
    job = _job(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    response.headers.update(SECURITY_HEADERS)
    await response.prepare(request)
    try:
        sent = int(request.headers.get("Last-Event-ID", "0"))
    except ValueError:
        sent = 0
    while True:
        changed = job.changed
        total = job.dropped + len(job.lines)
        start = max(sent, job.dropped)
        for index in range(start, total):
            line = sanitize.terminal_line(job.lines[index - job.dropped])
            await response.write(_event("line", line, index + 1))
        sent = total
        if job.finished is not None:
            await response.write(
                _event(
                    "done",
                    {"ok": job.ok, "result": sanitize.terminal(job.result), "next": job.next_url},
                )
            )
            return response
        try:
            await asyncio.wait_for(changed.wait(), 15)
        except TimeoutError:
            await response.write(b": keep-alive\n\n")


async def doctor_page(request: web.Request) -> web.StreamResponse:
    from hivegen.doctor import Doctor

    report = await request.app[CONTEXT].call(lambda hive: Doctor(hive).run())
    return _render(request, "doctor.html.j2", findings=report.findings)


_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == "pygments.css":
        return web.Response(text=highlight.html_css(), content_type="text/css")
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in _STATIC_TYPES or "/" in name:
        raise web.HTTPNotFound(reason="no such file")
    try:
        text = resources.files("hivegen.serve").joinpath("static", name).read_text()
    except FileNotFoundError:
        raise web.HTTPNotFound(reason="no such file") from None
    return web.Response(text=text, content_type=_STATIC_TYPES[suffix])


def make_app(context: Context, guard: Guard) -> web.Application:
    app = web.Application(client_max_size=MAX_FORM, middlewares=[_checks])
    app[CONTEXT] = context
    app[GUARD] = guard
    app[TEMPLATES] = _environment()
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", index)
    app.router.add_get(r"/proposals/{id}", proposal_page)
    app.router.add_post(r"/proposals/{id}/approve", approve)
    app.router.add_post(r"/proposals/{id}/deny", deny)
    app.router.add_get("/agents/{name}", agent_page)
    app.router.add_post("/agents/{name}/rollback", rollback)
    app.router.add_post("/spawn-requests/{name}/spawn", spawn)
    app.router.add_post("/spawn-requests/{name}/dismiss", dismiss)
    app.router.add_get(r"/jobs/{id}", job_page)
    app.router.add_get(r"/jobs/{id}/events", job_events)
    app.router.add_get("/doctor", doctor_page)
    app.router.add_get("/static/{name}", static)
    return app
