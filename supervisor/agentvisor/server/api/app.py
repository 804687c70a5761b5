"""The host API (FastAPI): thin HTTP routes over `Service`. See docs/contracts.md."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Mapping
from typing import Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentvisor import __version__
from agentvisor.errors import AgentvisorError, TooManyRequests
from agentvisor.server.api.egress import egress_router
from agentvisor.server.api.git import git_router
from agentvisor.server.api.limits import RequestSizeLimit, quota_gate
from agentvisor.server.api.model import model_credentials, model_router
from agentvisor.server.api.models import (
    COMMON_ERRORS,
    ActionBody,
    AgentBody,
    CheckinBody,
    DoneBody,
    EventBody,
    HeartbeatBody,
    LeaseAnswer,
    LeaseRef,
    NackBody,
    NamePath,
    NameQuery,
    ProjectBody,
    ProjectModelBody,
    ProjectStateBody,
    QueueBody,
    RoutingBody,
    RowId,
    SendBody,
    errors,
    json_errors,
    validation_detail,
)
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.dashboard.routes import dashboard_router
from agentvisor.server.doctor import docker_problem
from agentvisor.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from agentvisor.server.metrics import StoreCollector
from agentvisor.server.quotas import Quotas, retry_after_header
from agentvisor.server.service import Service
from agentvisor.store.database import Row

# How often a long poll looks at its inbox when nothing woke it (docs/delivery.md).
INBOX_RECHECK_S = 5.0


def lease_answer(message: Row) -> dict[str, Any]:
    """A leased message as the shim gets it (`LeaseAnswer`)."""
    return {
        "message": message,
        "lease_id": message["lease_id"],
        "lease_expires_at": message["lease_expires_at"],
    }


def _error(detail: str, status: int) -> JSONResponse:
    # A detail echoing bad input must still encode: a lone surrogate becomes its escape.
    safe = detail.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"detail": safe}, status_code=status)


def _doc(
    *codes: int, ok: dict[int | str, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: its success answers beyond the default, the errors every
    route may give (COMMON_ERRORS) and its own."""
    return {**(ok or {}), **COMMON_ERRORS, **errors(*codes)}


_REPLAYED: dict[int | str, dict[str, Any]] = {
    200: {"description": "The same idempotency_key was used before: the first one."}
}


def create_app(
    service: Service, auth: Authenticator, model_env: Mapping[str, str] | None = None
) -> FastAPI:
    app = FastAPI(
        title="agentvisor host API",
        version=__version__,
        description="Messages, check-ins and the agents' inboxes. See docs/contracts.md.",
        dependencies=[Depends(quota_gate(Quotas(service.settings, service.store), auth))],
    )
    app.state.service = service

    @app.exception_handler(AgentvisorError)
    async def _domain_error(_: Request, exc: AgentvisorError) -> JSONResponse:
        return _error(exc.message, exc.status)

    @app.exception_handler(TooManyRequests)
    async def _over_quota(_: Request, exc: TooManyRequests) -> JSONResponse:
        retry = retry_after_header(exc.retry_after_s)
        return JSONResponse(
            {"detail": exc.message}, status_code=429, headers={"Retry-After": retry}
        )

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(validation_detail(exc), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            detail = "the request body is not UTF-8 JSON: send a JSON object in UTF-8"
        response = _error(detail, exc.status_code)
        response.headers.update(exc.headers or {})  # a 405 keeps its Allow header
        return response

    @app.exception_handler(sqlite3.OperationalError)
    async def _db_error(_: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        return _error(f"the state database is not available: {exc}; retry shortly", 503)

    app.add_middleware(RequestSizeLimit)

    # Async, so on the event loop: a token check is one indexed read, cheaper than the hop to
    # a worker thread that FastAPI makes for a plain `def` dependency.
    async def caller(authorization: str | None = Header(default=None)) -> Caller:
        return auth.caller(authorization)

    svc = service
    app.include_router(git_router(service, auth))
    app.include_router(egress_router(service, auth), responses=_doc(400, 403, 404, 507))
    credentials = model_credentials(service, model_env)
    app.include_router(model_router(service, auth, credentials), responses=_doc(400, 403, 404, 507))

    @app.get("/v1/health", responses=errors(413))
    def health() -> dict[str, Any]:
        result: dict[str, Any] = {"ok": True, "version": __version__}
        try:
            svc.store.check_writable()
            result["db"] = "ok"
        except Exception as exc:  # health reports, it does not fail
            result.update(ok=False, db=f"not writable: {exc}")
        free_mb = shutil.disk_usage(svc.settings.state_dir).free // (1024 * 1024)
        result["disk_free_mb"] = free_mb
        if free_mb < 200:
            result.update(ok=False, disk=f"only {free_mb} MiB free in {svc.settings.state_dir}")
        result["scheduler"] = "running" if svc.scheduler is not None else "off"
        problem = docker_problem()
        result["docker"] = "ok" if problem is None else f"not reachable: {problem}"
        if problem is not None:
            result["ok"] = False
        login = credentials.problem()  # the host's Claude Code login could not be refreshed
        if login is not None:
            result.update(ok=False, model_login=login)
        return result

    @app.get("/metrics", response_class=PlainTextResponse, responses=json_errors(413, 503))
    def metrics() -> PlainTextResponse:
        # prometheus_client writes the text, escaping every label value (agentvisor.server.metrics).
        text = svc.metrics.render(StoreCollector(svc.store))
        return PlainTextResponse(text, media_type=METRICS_CONTENT_TYPE)

    @app.get("/v1/whoami", responses=_doc())
    def whoami(who: Caller = Depends(caller)) -> dict[str, Any]:
        if who.agent is None:
            return {"kind": "operator"}
        project = svc.store.get_project_by_id(who.agent["project_id"])
        return {
            "kind": "agent",
            "project": project["name"],
            "role": who.agent["role"],
            "agent_id": who.agent["id"],
            "profile": who.agent["profile"],
        }

    # -- projects and agents ---------------------------------------------------------------
    @app.post("/v1/projects", responses=_doc(403, 507))
    def create_project(body: ProjectBody, who: Caller = Depends(caller)) -> Row:
        who.require_operator()
        return svc.store.upsert_project(body.name, body.path, body.spec_path, body.start_branch)

    @app.get("/v1/projects", responses=_doc(404))
    def projects(who: Caller = Depends(caller)) -> list[Row]:
        if who.agent is not None:
            return [svc.store.get_project_by_id(who.agent["project_id"])]
        return svc.store.list_projects()

    @app.get("/v1/projects/{name}/routing", responses=_doc(403, 404))
    def project_routing(name: NamePath, who: Caller = Depends(caller)) -> Row:
        project = svc.project_for(who, name)
        return {"project": project["name"], **svc.routing(project).as_dict()}

    @app.post("/v1/projects/{name}/routing", responses=_doc(403, 404, 507))
    def set_project_routing(
        name: NamePath, body: RoutingBody, who: Caller = Depends(caller)
    ) -> Row:
        return svc.set_routing(who, name, body.model_dump(exclude_none=True))

    @app.post("/v1/projects/{name}/release", responses=_doc(403, 404, 507))
    def project_release(name: NamePath, who: Caller = Depends(caller)) -> dict[str, int]:
        return {"released": svc.release_project(who, name)}

    @app.post("/v1/projects/{name}/state", responses=_doc(403, 404, 507))
    def project_state(name: NamePath, body: ProjectStateBody, who: Caller = Depends(caller)) -> Row:
        return svc.set_project_state(who, name, body.state)

    @app.post("/v1/projects/{name}/model", responses=_doc(403, 404, 507))
    def project_model(name: NamePath, body: ProjectModelBody, who: Caller = Depends(caller)) -> Row:
        return svc.set_project_model(who, name, body.upstream, body.script)

    @app.post("/v1/agents", status_code=201, responses=_doc(400, 403, 404, 507))
    def register_agent(body: AgentBody, who: Caller = Depends(caller)) -> dict[str, Any]:
        agent, token = svc.register_agent(who, body.project, body.role, body.profile)
        # The sandbox's own socket (agentvisor.sandbox.sandbox_sockets), when the server serves one.
        on_registered = getattr(app.state, "on_agent_registered", None)
        if on_registered is not None:
            on_registered(body.project, agent["role"])
        return {**_public_agent(agent), "token": token}

    @app.get("/v1/agents", responses=_doc(400, 403, 404))
    def agents(project: NameQuery = None, who: Caller = Depends(caller)) -> list[dict[str, Any]]:
        return [_public_agent(a) for a in svc.agents(who, project)]

    # -- messages --------------------------------------------------------------------------
    @app.post(
        "/v1/messages",
        status_code=201,
        responses=_doc(400, 403, 404, 413, 429, 507, ok=_REPLAYED),
    )
    async def send(body: SendBody, response: Response, who: Caller = Depends(caller)) -> Row:
        message, created = await svc.write(
            lambda: svc.send(who, body.to, body.body, body.kind, body.idempotency_key, body.project)
        )
        if not created:
            response.status_code = 200
        return message

    @app.get("/v1/messages", responses=_doc(400, 403, 404))
    def messages(
        project: NameQuery = None,
        recipient: NameQuery = None,
        state: NameQuery = None,
        limit: int = Query(50, ge=1, le=500),
        who: Caller = Depends(caller),
    ) -> list[Row]:
        return svc.messages(who, project, recipient, state, limit)

    @app.post("/v1/messages/{message_id}/action", responses=_doc(400, 403, 404, 409, 507))
    def message_action(message_id: RowId, body: ActionBody, who: Caller = Depends(caller)) -> Row:
        return svc.change_message(who, message_id, body.action)

    # -- check-ins -------------------------------------------------------------------------
    @app.post(
        "/v1/checkins",
        status_code=201,
        responses=_doc(400, 403, 404, 413, 429, 507, ok=_REPLAYED),
    )
    def schedule(body: CheckinBody, response: Response, who: Caller = Depends(caller)) -> Row:
        checkin, created = svc.schedule(
            who,
            body.note,
            body.minutes,
            body.due_at,
            body.to,
            body.every_minutes,
            body.idempotency_key,
            body.project,
        )
        if not created:
            response.status_code = 200
        return checkin

    @app.get("/v1/checkins", responses=_doc(400, 403, 404))
    def checkins(
        project: NameQuery = None,
        state: NameQuery = "pending",
        limit: int = Query(200, ge=1, le=1000),
        who: Caller = Depends(caller),
    ) -> list[Row]:
        return svc.checkins(who, project, state if state != "all" else None, limit)

    @app.delete("/v1/checkins/{checkin_id}", responses=_doc(403, 404, 409, 507))
    def cancel_checkin(checkin_id: RowId, who: Caller = Depends(caller)) -> Row:
        return svc.cancel_checkin(who, checkin_id)

    # -- the shim's inbox ------------------------------------------------------------------
    @app.post(
        "/v1/inbox/lease",
        response_model=None,
        responses=_doc(
            403,
            507,
            ok={
                200: {"model": LeaseAnswer, "description": "The message leased."},
                204: {"description": "Nothing to deliver within wait_s."},
            },
        ),
    )
    async def lease(
        request: Request,
        wait_s: float = Query(25.0, ge=0, le=60, allow_inf_nan=False),
        who: Caller = Depends(caller),
    ) -> Response:
        agent = who.require_agent()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        generation = svc.waiters.begin_poll(agent["id"])
        while True:
            seen = svc.waiters.version(agent["id"])
            # Nothing for a poll whose shim went away, or that a newer poll or a release
            # superseded: the message stays queued for the one that asks next.
            if not svc.waiters.is_current(agent["id"], generation) or (
                await request.is_disconnected()
            ):
                return Response(status_code=204)
            # A plain read on the loop first (an empty inbox is the common case); the lease
            # itself may wait for SQLite's write lock: off the event loop.
            message = None
            pending = svc.store.has_pending(agent["id"])
            if pending:
                message = await svc.write(lambda: svc.lease(who))
            if message is not None:
                return JSONResponse(lease_answer(message))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return Response(status_code=204)
            # Woken at once by a new message for this agent (and by a release); the re-check
            # comes when a lease held on its messages runs out, and every INBOX_RECHECK_S
            # for anything else (a message queued by another process, a pause that ended).
            pause = min(remaining, INBOX_RECHECK_S)
            expiry = svc.store.next_lease_expiry(agent["id"]) if pending else None
            if expiry is not None:
                pause = min(pause, max(expiry - svc.store.clock.now(), 0.0) + 0.01)
            await svc.waiters.wait(agent["id"], pause, seen)

    @app.post("/v1/inbox/{message_id}/ack", responses=_doc(403, 404, 409, 507))
    async def ack(
        message_id: RowId,
        body: LeaseRef,
        lease_next: bool = Query(False),
        who: Caller = Depends(caller),
    ) -> Row:
        # With lease_next, the agent's next message comes leased in the same answer (under
        # "next", null when there is none): one round trip per delivery instead of two.
        if not lease_next:
            return await svc.write(lambda: svc.ack(who, message_id, body.lease_id))
        acked, leased = await svc.write(lambda: svc.ack_and_lease(who, message_id, body.lease_id))
        return {**acked, "next": None if leased is None else lease_answer(leased)}

    @app.post("/v1/inbox/{message_id}/nack", responses=_doc(403, 404, 409, 507))
    async def nack(message_id: RowId, body: NackBody, who: Caller = Depends(caller)) -> Row:
        return await svc.write(
            lambda: svc.nack(who, message_id, body.lease_id, body.reason, body.retry)
        )

    @app.post("/v1/inbox/{message_id}/extend", responses=_doc(403, 404, 409, 507))
    async def extend(message_id: RowId, body: LeaseRef, who: Caller = Depends(caller)) -> Row:
        return await svc.write(lambda: svc.extend(who, message_id, body.lease_id))

    @app.post("/v1/inbox/release", responses=_doc(403, 507))
    def release(who: Caller = Depends(caller)) -> dict[str, int]:
        return {"released": svc.release(who)}

    @app.get("/v1/inbox", responses=_doc(403))
    def inbox(who: Caller = Depends(caller)) -> list[Row]:
        return svc.inbox(who)

    @app.post("/v1/done", responses=_doc(400, 403, 404, 413, 507))
    def done(body: DoneBody, who: Caller = Depends(caller)) -> Row:
        return svc.done(who, body.summary)

    @app.post("/v1/heartbeat", responses=_doc(403, 507))
    async def heartbeat(body: HeartbeatBody, who: Caller = Depends(caller)) -> dict[str, Any]:
        return await svc.write(lambda: svc.heartbeat(who, body.state, body.info))

    @app.post("/v1/events", status_code=201, responses=_doc(400, 403, 429, 507))
    def post_event(body: EventBody, who: Caller = Depends(caller)) -> Row:
        return svc.event(who, body.kind, body.data)

    @app.post("/v1/queue", status_code=201, responses=_doc(400, 403, 507))
    def queue_add(body: QueueBody, who: Caller = Depends(caller)) -> Row:
        return svc.queue_add(who, body.spec_path, body.project_dir, body.options)

    @app.get("/v1/queue", responses=_doc(403))
    def queue_list(state: NameQuery = None, who: Caller = Depends(caller)) -> list[Row]:
        return svc.queue_list(who, state)

    @app.get("/v1/queue/{queue_id}", responses=_doc(403, 404))
    def queue_get(queue_id: RowId, who: Caller = Depends(caller)) -> Row:
        return svc.queue_get(who, queue_id)

    @app.delete("/v1/queue/{queue_id}", responses=_doc(403, 404, 409, 507))
    def queue_cancel(queue_id: RowId, who: Caller = Depends(caller)) -> Row:
        return svc.queue_cancel(who, queue_id)

    @app.get("/v1/events", responses=_doc(400, 403, 404))
    def events(
        project: NameQuery = None,
        limit: int = Query(100, ge=1, le=1000),
        who: Caller = Depends(caller),
    ) -> list[Row]:
        return svc.events(who, project, limit)

    app.include_router(dashboard_router(service, auth), responses=_doc(403, 404))
    return app


def _public_agent(agent: Row) -> dict[str, Any]:
    return {k: v for k, v in agent.items() if k != "token_hash"}
