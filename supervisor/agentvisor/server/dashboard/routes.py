"""The live web dashboard: the page at `/`, one JSON snapshot of a project, and a server-sent
event stream of an agent's pane. Read-only; operators write through the existing API routes.

Reads need no token on the loopback TCP port only (see docs/guides/dashboard.md); everywhere
else, including the Unix socket that the sandboxes mount, they need the operator token.
"""

from __future__ import annotations

import asyncio
import builtins
import ipaddress
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from anyio import to_thread
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from agentvisor import __version__
from agentvisor.clock import Clock
from agentvisor.config import Settings
from agentvisor.core.sandbox_status import SandboxInfo, SandboxStats
from agentvisor.errors import AgentvisorError, NotFound, SandboxError, Unauthorized
from agentvisor.server.api.models import NameQuery
from agentvisor.server.api.responses import DashboardState
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.dashboard.state import (
    ProjectRows,
    Row,
    SandboxView,
    event_rows,
    project_summary,
    snapshot,
)
from agentvisor.server.egress.allowlist import requests
from agentvisor.server.model_usage import ModelAccounting
from agentvisor.server.service import Service
from agentvisor.store.database import Store

log = logging.getLogger("agentvisor.dashboard")

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# Everything the page needs comes from this server; pane text is only ever set as text.
USAGE_CHART_S = 24 * 3600.0  # the usage chart shows the last day in 48 half-hour buckets
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
RECENT_MESSAGES = 50
RECENT_CHECKINS = 20
RECENT_EVENTS = 60
RECENT_EGRESS = 50
QUEUE_ROWS = 20
LOOPBACK_NAMES = {"localhost"}


class Sandboxes(Protocol):
    """The part of `SandboxBackend` the dashboard reads."""

    def list(self, project: str | None = None) -> builtins.list[SandboxInfo]: ...

    def stats(
        self, project: str | None = None, role: str | None = None
    ) -> dict[tuple[str, str], SandboxStats]: ...

    def pane_history(self, project: str, role: str, lines: int = 200) -> str: ...


class TooManyViewers(AgentvisorError):
    status = 429


# --- who may read --------------------------------------------------------------------------------


def _loopback_ip(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The name in a Host header: `127.0.0.1:8123` -> `127.0.0.1`, `[::1]:8123` -> `::1`."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_loopback_request(scope: Mapping[str, Any], host_header: str) -> bool:
    """True for a request that came in on a loopback TCP listener, from a loopback address,
    naming a loopback host. The Unix socket (no TCP address) never qualifies, and the Host check
    stops a web page from reaching the dashboard through DNS rebinding."""
    server, client = scope.get("server"), scope.get("client")
    if not (isinstance(server, list | tuple) and len(server) == 2 and isinstance(server[1], int)):
        return False  # the Unix socket: its "server" is the socket's path
    if not _loopback_ip(server[0]) or not client or not _loopback_ip(client[0]):
        return False
    name = _host_name(host_header.strip().lower())
    return name in LOOPBACK_NAMES or _loopback_ip(name)


# --- reading the store ---------------------------------------------------------------------------


class DashboardQueries:
    """Read-only queries over the store that only the dashboard needs (aggregates per agent)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def fetch_all(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        return [dict(r) for r in self.store.db.execute(sql, params).fetchall()]

    def projects(self) -> list[Row]:
        counts: dict[int, dict[str, int]] = {}
        for row in self.fetch_all(
            "SELECT project_id, state, COUNT(*) AS n FROM messages GROUP BY project_id, state"
        ):
            counts.setdefault(row["project_id"], {})[row["state"]] = row["n"]
        checkins = {
            r["project_id"]: r["n"]
            for r in self.fetch_all(
                "SELECT project_id, COUNT(*) AS n FROM checkins WHERE state = 'pending' "
                "GROUP BY project_id"
            )
        }
        agents = {
            r["project_id"]: r["n"]
            for r in self.fetch_all(
                "SELECT project_id, COUNT(*) AS n FROM agents GROUP BY project_id"
            )
        }
        return [
            project_summary(
                p, agents.get(p["id"], 0), counts.get(p["id"], {}), checkins.get(p["id"], 0)
            )
            for p in self.store.list_projects()
        ]

    def project_rows(self, project: Row) -> ProjectRows:
        pid = project["id"]
        agents = self.store.list_agents(pid)
        activity: dict[int, float] = {}

        def note(agent_id: int | None, at: float | None) -> None:
            if agent_id is not None and at is not None:
                activity[agent_id] = max(activity.get(agent_id, at), at)

        for r in self.fetch_all(
            "SELECT agent_id, MAX(at) AS at FROM events WHERE project_id = ? "
            "AND agent_id IS NOT NULL GROUP BY agent_id",
            (pid,),
        ):
            note(r["agent_id"], r["at"])
        for r in self.fetch_all(
            "SELECT recipient_id, MAX(delivered_at) AS at FROM messages WHERE project_id = ? "
            "GROUP BY recipient_id",
            (pid,),
        ):
            note(r["recipient_id"], r["at"])
        by_role = {a["role"]: a["id"] for a in agents}
        for r in self.fetch_all(
            "SELECT sender, MAX(created_at) AS at FROM messages WHERE project_id = ? "
            "GROUP BY sender",
            (pid,),
        ):
            note(by_role.get(r["sender"]), r["at"])
        pending: dict[int, dict[str, int]] = {}
        for r in self.fetch_all(
            "SELECT recipient_id, state, COUNT(*) AS n FROM messages WHERE project_id = ? "
            "AND state IN ('queued', 'leased') GROUP BY recipient_id, state",
            (pid,),
        ):
            pending.setdefault(r["recipient_id"], {})[r["state"]] = r["n"]
        checkins = self.store.list_checkins(pid, "pending", limit=RECENT_CHECKINS * 5)
        checkins += self.fetch_all(
            "SELECT * FROM checkins WHERE project_id = ? AND state != 'pending' "
            "ORDER BY COALESCE(last_fired_at, created_at) DESC LIMIT ?",
            (pid, RECENT_CHECKINS),
        )
        fired = {
            r["checkin_id"]: r
            for r in self.fetch_all(
                "SELECT id, checkin_id, state, delivered_at FROM messages WHERE id IN "
                "(SELECT MAX(id) FROM messages WHERE project_id = ? AND checkin_id IS NOT NULL "
                "GROUP BY checkin_id)",
                (pid,),
            )
        }
        return ProjectRows(
            project=project,
            agents=agents,
            messages=self.store.list_messages(pid, limit=RECENT_MESSAGES),
            checkins=checkins,
            events=self.events(pid),
            activity=activity,
            pending=pending,
            checkin_messages=fired,
            egress=requests(self.store, pid, limit=RECENT_EGRESS),
        )

    def events(self, project_id: int | None) -> list[Row]:
        """The project's recent events and the server-wide ones (start, stop, queue)."""
        events = self.fetch_all(
            "SELECT * FROM events WHERE project_id IS ? OR project_id IS NULL "
            "ORDER BY id DESC LIMIT ?",
            (project_id, RECENT_EVENTS),
        )
        for event in events:
            event["data"] = json.loads(event["data"] or "{}")
        return events

    def queue(self) -> list[Row]:
        """The project queue (specs waiting to run), unfinished entries first; empty when this
        database has no queue table."""
        try:
            rows = self.fetch_all(
                "SELECT * FROM queue ORDER BY CASE WHEN state IN ('queued', 'running') "
                "THEN 0 ELSE 1 END, id DESC LIMIT ?",
                (QUEUE_ROWS,),
            )
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        keep = (
            "id",
            "spec_path",
            "project",
            "state",
            "attempts",
            "max_attempts",
            "created_at",
            "started_at",
            "finished_at",
            "last_error",
        )
        return [{k: r.get(k) for k in keep} for r in rows]


# --- Docker: sandbox states and stats, sampled in the background --------------------------------


class SandboxMonitor:
    """The sandboxes' status, CPU and memory per project, sampled at most every `ttl_s` in a
    background thread: a `docker stats` sample takes a second or two, and the dashboard must
    answer at once, also when Docker does not answer at all."""

    def __init__(self, sandboxes: Callable[[], Sandboxes], clock: Clock, ttl_s: float = 4.0):
        self._sandboxes = sandboxes
        self._clock = clock
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._views: dict[str, SandboxView] = {}
        self._fresh_until: dict[str, float] = {}
        self._refreshing: set[str] = set()

    def view(self, project: str) -> SandboxView:
        """The latest sample (empty before the first), starting a new one when it is stale."""
        with self._lock:
            stale = time.monotonic() >= self._fresh_until.get(project, 0.0)
            start = stale and project not in self._refreshing
            if start:
                self._refreshing.add(project)
            view = self._views.get(project, SandboxView())
        if start:
            threading.Thread(
                target=self.refresh, args=(project,), name="dashboard-stats", daemon=True
            ).start()
        return view

    def refresh(self, project: str) -> SandboxView:
        try:
            backend = self._sandboxes()
            infos = {info.role: info for info in backend.list(project)}
            stats = {role: s for (_, role), s in backend.stats(project).items()}
            view = SandboxView(infos, stats, None, self._clock.now())
        except SandboxError as exc:  # Docker down or refusing: shown on the page
            view = SandboxView(error=exc.message, sampled_at=self._clock.now())
        except Exception as exc:  # e.g. a read timeout: shown on the page and logged
            log.warning("sampling the sandboxes of %s failed: %s", project, exc, exc_info=True)
            view = SandboxView(
                error=f"reading the sandboxes failed: {exc}", sampled_at=self._clock.now()
            )
        with self._lock:
            self._views[project] = view
            self._fresh_until[project] = time.monotonic() + self._ttl_s
            self._refreshing.discard(project)
        return view


# --- the pane stream -----------------------------------------------------------------------------


def sse(event: str, data: Mapping[str, Any]) -> str:
    """One server-sent event; JSON keeps the pane's newlines out of the framing."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


class PaneStreams:
    """Follows agents' panes for the page: polls `pane_history` in a worker thread every
    `interval_s` and sends the text when it changed. A stream ends when its client goes
    (Starlette cancels it), so nothing polls a pane nobody looks at."""

    def __init__(
        self,
        sandboxes: Callable[[], Sandboxes],
        clock: Clock,
        interval_s: float = 0.6,
        keepalive_s: float = 15.0,
        max_streams: int = 16,
    ) -> None:
        self._sandboxes = sandboxes
        self._clock = clock
        self.interval_s = interval_s
        self.keepalive_s = keepalive_s
        self.max_streams = max_streams
        self.active = 0  # only touched on the event loop

    def admit(self) -> None:
        if self.active >= self.max_streams:
            raise TooManyViewers(
                f"{self.active} pane views are open, the most this server serves; close one"
            )

    def read(self, project: str, role: str, lines: int) -> dict[str, Any]:
        try:
            return {"text": self._sandboxes().pane_history(project, role, lines), "error": None}
        except SandboxError as exc:
            return {"text": None, "error": exc.message}

    async def follow(self, project: str, role: str, lines: int) -> AsyncIterator[str]:
        self.active += 1
        try:
            yield f"retry: 2000\n: pane of {role} in {project}\n\n"
            last: dict[str, Any] | None = None
            quiet_s = 0.0
            while True:
                pane = await to_thread.run_sync(self.read, project, role, lines)
                if pane != last:
                    last = pane
                    quiet_s = 0.0
                    yield sse("pane", {**pane, "role": role, "at": self._clock.now()})
                elif quiet_s >= self.keepalive_s:
                    quiet_s = 0.0
                    yield ": keep-alive\n\n"
                await asyncio.sleep(self.interval_s)
                quiet_s += self.interval_s
        finally:
            self.active -= 1


# --- the routes ----------------------------------------------------------------------------------


def _backend_factory(settings: Settings) -> Callable[[], Sandboxes]:
    """One `SandboxBackend`, made on first use (it connects to Docker lazily)."""
    made: list[Sandboxes] = []
    lock = threading.Lock()

    def get() -> Sandboxes:
        with lock:
            if not made:
                from agentvisor.sandbox.sandboxes import SandboxBackend

                made.append(SandboxBackend(settings))
            return made[0]

    return get


def dashboard_router(
    service: Service,
    auth: Authenticator,
    sandboxes: Callable[[], Sandboxes] | None = None,
    pane_interval_s: float = 0.6,
) -> APIRouter:
    """The dashboard's routes. `sandboxes` gives the container backend (tests pass a fake)."""
    settings, store = service.settings, service.store
    backend = sandboxes or _backend_factory(settings)
    queries = DashboardQueries(store)
    monitor = SandboxMonitor(backend, store.clock)
    streams = PaneStreams(backend, store.clock, interval_s=pane_interval_s)
    router = APIRouter()
    accounting = ModelAccounting(service)

    async def reader(request: Request, authorization: str | None = Header(default=None)) -> None:
        if authorization:
            auth.caller(authorization).require_operator()
        elif not is_loopback_request(request.scope, request.headers.get("host", "")):
            raise Unauthorized(
                "the dashboard is readable without a token only on the loopback TCP port, "
                "opened as http://127.0.0.1:N/ or http://localhost:N/ (agentvisor serve "
                "--port N); elsewhere send the operator token"
            )

    @router.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "dashboard.html",
            media_type="text/html; charset=utf-8",
            headers=PAGE_HEADERS,
        )

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            raise NotFound(f"no static file {name}")
        return FileResponse(STATIC_DIR / name, media_type=media_type, headers=PAGE_HEADERS)

    @router.get(
        "/v1/dashboard/state",
        dependencies=[Depends(reader)],
        response_model=DashboardState,
        response_model_exclude_unset=True,
    )
    def state(project: NameQuery = None) -> dict[str, Any]:
        now = store.clock.now()
        projects = store.list_projects()
        chosen = store.get_project(project) if project else (projects[-1] if projects else None)
        body: dict[str, Any] = {
            "version": __version__,
            "now": now,
            "heartbeat_timeout_s": settings.heartbeat_timeout_s,
            "projects": queries.projects(),
            "queue": queries.queue(),
            "pane_streams": streams.active,
            "project": None,
            "agents": [],
            "messages": [],
            "checkins": [],
            "events": event_rows(queries.events(None), {}),
            "sandboxes": {"error": None, "sampled_at": None},
            "usage": None,
        }
        if chosen is not None:
            body["usage"] = {
                **accounting.report(Caller("operator"), chosen["name"]),
                "chart": accounting.chart(chosen, now - USAGE_CHART_S, USAGE_CHART_S / 48),
            }
            view = monitor.view(chosen["name"])
            rows = queries.project_rows(chosen)
            body.update(snapshot(rows, view, now, settings.heartbeat_timeout_s))
            body["sandboxes"] = {"error": view.error, "sampled_at": view.sampled_at}
        return body

    @router.get(
        "/v1/dashboard/pane/{project}/{role}/stream",
        dependencies=[Depends(reader)],
        response_class=StreamingResponse,
        responses={
            200: {
                "description": '`pane` events: `{"text", "error", "role", "at"}`.',
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        },
    )
    async def pane_stream(
        project: str, role: str, lines: int = Query(300, ge=10, le=5000)
    ) -> StreamingResponse:
        await run_in_threadpool(lambda: store.get_agent(store.get_project(project)["id"], role))
        streams.admit()
        return StreamingResponse(
            streams.follow(project, role, lines),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
