"""The host API (FastAPI): thin HTTP routes over `Service`. See docs/contracts.md."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Mapping
from typing import Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from supervisor import __version__
from supervisor.auth import Authenticator, Caller
from supervisor.dashboard import dashboard_router
from supervisor.doctor import docker_problem
from supervisor.egress.routes import egress_router
from supervisor.errors import AgentvisorError
from supervisor.git_api import git_router
from supervisor.model_api import model_credentials, model_router
from supervisor.service import Service
from supervisor.store import Row

MAX_REQUEST_BYTES = 2 * 1024 * 1024


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SendBody(Strict):
    to: str
    body: str
    kind: str = "message"
    idempotency_key: str | None = None
    project: str | None = None


class CheckinBody(Strict):
    note: str
    minutes: float | None = None
    due_at: float | None = None
    to: str | None = None
    every_minutes: float | None = None
    idempotency_key: str | None = None
    project: str | None = None


class LeaseRef(Strict):
    lease_id: str = Field(min_length=1, max_length=64)


class NackBody(LeaseRef):
    reason: str = "not delivered"
    retry: bool = True


class DoneBody(Strict):
    summary: str


class HeartbeatBody(Strict):
    state: str | None = None
    info: dict[str, Any] | None = None


class EventBody(Strict):
    kind: str
    data: dict[str, Any] | None = None


class ProjectBody(Strict):
    name: str = Field(min_length=1, max_length=100)
    path: str = ""
    spec_path: str | None = None
    start_branch: str | None = None


class AgentBody(Strict):
    project: str
    role: str
    profile: str = "demo"


class QueueBody(Strict):
    spec_path: str
    project_dir: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ActionBody(Strict):
    action: str


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return "the request body is not valid JSON: send a JSON object"
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


class RequestSizeLimit:
    """Refuse a body declared over MAX_REQUEST_BYTES (413). Plain ASGI rather than
    `@app.middleware("http")`, which would pass every streamed answer (the model broker's, the
    git channel's, the pane stream's) through an extra queue and task."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(("/git/", "/model/")):
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > MAX_REQUEST_BYTES:
                detail = (
                    f"request of {int(length)} bytes is over the {MAX_REQUEST_BYTES}-byte limit"
                )
                await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    service: Service, auth: Authenticator, model_env: Mapping[str, str] | None = None
) -> FastAPI:
    app = FastAPI(
        title="agentvisor host API",
        version=__version__,
        description="Messages, check-ins and the agents' inboxes. See docs/contracts.md.",
    )
    app.state.service = service

    @app.exception_handler(AgentvisorError)
    async def _domain_error(_: Request, exc: AgentvisorError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    @app.exception_handler(sqlite3.OperationalError)
    async def _db_error(_: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the state database is not available: {exc}; retry shortly"},
            status_code=503,
        )

    app.add_middleware(RequestSizeLimit)

    def caller(authorization: str | None = Header(default=None)) -> Caller:
        return auth.caller(authorization)

    svc = service
    app.include_router(git_router(service, auth))
    app.include_router(egress_router(service, auth))
    credentials = model_credentials(service, model_env)
    app.include_router(model_router(service, auth, credentials))

    @app.get("/v1/health")
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

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        by_state = svc.store.count_messages_by_state()
        agents: dict[str, float] = {}
        for agent in svc.store.list_agents():
            key = f'state="{agent["state"] or "unknown"}"'
            agents[key] = agents.get(key, 0) + 1
        gauges: dict[str, tuple[str, dict[str, float]]] = {
            "messages": (
                "Messages by delivery state.",
                {f'state="{k}"': v for k, v in by_state.items()},
            ),
            "checkins_pending": (
                "Check-ins waiting to fire.",
                {"": svc.store.count_pending_checkins()},
            ),
            "agents": ("Agents by state.", agents),
        }
        return svc.metrics.render(gauges)

    @app.get("/v1/whoami")
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
    @app.post("/v1/projects")
    def create_project(body: ProjectBody, who: Caller = Depends(caller)) -> Row:
        who.require_operator()
        return svc.store.upsert_project(body.name, body.path, body.spec_path, body.start_branch)

    @app.get("/v1/projects")
    def projects(who: Caller = Depends(caller)) -> list[Row]:
        if who.agent is not None:
            return [svc.store.get_project_by_id(who.agent["project_id"])]
        return svc.store.list_projects()

    @app.post("/v1/agents", status_code=201)
    def register_agent(body: AgentBody, who: Caller = Depends(caller)) -> dict[str, Any]:
        agent, token = svc.register_agent(who, body.project, body.role, body.profile)
        return {**_public_agent(agent), "token": token}

    @app.get("/v1/agents")
    def agents(project: str | None = None, who: Caller = Depends(caller)) -> list[dict[str, Any]]:
        return [_public_agent(a) for a in svc.agents(who, project)]

    # -- messages --------------------------------------------------------------------------
    @app.post("/v1/messages", status_code=201)
    def send(body: SendBody, response: Response, who: Caller = Depends(caller)) -> Row:
        message, created = svc.send(
            who, body.to, body.body, body.kind, body.idempotency_key, body.project
        )
        if not created:
            response.status_code = 200
        return message

    @app.get("/v1/messages")
    def messages(
        project: str | None = None,
        recipient: str | None = None,
        state: str | None = None,
        limit: int = Query(50),
        who: Caller = Depends(caller),
    ) -> list[Row]:
        return svc.messages(who, project, recipient, state, limit)

    @app.post("/v1/messages/{message_id}/action")
    def message_action(message_id: int, body: ActionBody, who: Caller = Depends(caller)) -> Row:
        return svc.change_message(who, message_id, body.action)

    # -- check-ins -------------------------------------------------------------------------
    @app.post("/v1/checkins", status_code=201)
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

    @app.get("/v1/checkins")
    def checkins(
        project: str | None = None,
        state: str | None = "pending",
        limit: int = Query(200),
        who: Caller = Depends(caller),
    ) -> list[Row]:
        return svc.checkins(who, project, state if state != "all" else None, limit)

    @app.delete("/v1/checkins/{checkin_id}")
    def cancel_checkin(checkin_id: int, who: Caller = Depends(caller)) -> Row:
        return svc.cancel_checkin(who, checkin_id)

    # -- the shim's inbox ------------------------------------------------------------------
    @app.post("/v1/inbox/lease")
    async def lease(
        wait_s: float = Query(25.0, ge=0, le=60), who: Caller = Depends(caller)
    ) -> Response:
        agent = who.require_agent()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            seen = svc.waiters.version(agent["id"])
            # The store call may wait for SQLite's write lock: keep it off the event loop.
            message = await run_in_threadpool(svc.lease, who)
            if message is not None:
                return JSONResponse(
                    {
                        "message": message,
                        "lease_id": message["lease_id"],
                        "lease_expires_at": message["lease_expires_at"],
                    }
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                return Response(status_code=204)
            # Woken at once by a new message for this agent; the periodic re-check covers
            # messages queued by another process and leases that expire.
            await svc.waiters.wait(agent["id"], min(remaining, 1.0), seen)

    @app.post("/v1/inbox/{message_id}/ack")
    def ack(message_id: int, body: LeaseRef, who: Caller = Depends(caller)) -> Row:
        return svc.ack(who, message_id, body.lease_id)

    @app.post("/v1/inbox/{message_id}/nack")
    def nack(message_id: int, body: NackBody, who: Caller = Depends(caller)) -> Row:
        return svc.nack(who, message_id, body.lease_id, body.reason, body.retry)

    @app.post("/v1/inbox/{message_id}/extend")
    def extend(message_id: int, body: LeaseRef, who: Caller = Depends(caller)) -> Row:
        return svc.extend(who, message_id, body.lease_id)

    @app.post("/v1/inbox/release")
    def release(who: Caller = Depends(caller)) -> dict[str, int]:
        return {"released": svc.release(who)}

    @app.get("/v1/inbox")
    def inbox(who: Caller = Depends(caller)) -> list[Row]:
        return svc.inbox(who)

    @app.post("/v1/done")
    def done(body: DoneBody, who: Caller = Depends(caller)) -> Row:
        return svc.done(who, body.summary)

    @app.post("/v1/heartbeat")
    def heartbeat(body: HeartbeatBody, who: Caller = Depends(caller)) -> dict[str, Any]:
        return svc.heartbeat(who, body.state, body.info)

    @app.post("/v1/events", status_code=201)
    def post_event(body: EventBody, who: Caller = Depends(caller)) -> Row:
        return svc.event(who, body.kind, body.data)

    @app.post("/v1/queue", status_code=201)
    def queue_add(body: QueueBody, who: Caller = Depends(caller)) -> Row:
        return svc.queue_add(who, body.spec_path, body.project_dir, body.options)

    @app.get("/v1/queue")
    def queue_list(state: str | None = None, who: Caller = Depends(caller)) -> list[Row]:
        return svc.queue_list(who, state)

    @app.get("/v1/queue/{queue_id}")
    def queue_get(queue_id: int, who: Caller = Depends(caller)) -> Row:
        return svc.queue_get(who, queue_id)

    @app.delete("/v1/queue/{queue_id}")
    def queue_cancel(queue_id: int, who: Caller = Depends(caller)) -> Row:
        return svc.queue_cancel(who, queue_id)

    @app.get("/v1/events")
    def events(
        project: str | None = None, limit: int = Query(100), who: Caller = Depends(caller)
    ) -> list[Row]:
        return svc.events(who, project, limit)

    app.include_router(dashboard_router(service, auth))
    return app


def _public_agent(agent: Row) -> dict[str, Any]:
    return {k: v for k, v in agent.items() if k != "token_hash"}
