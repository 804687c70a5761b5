"""The host API (FastAPI): the app, its error handlers and its routers, one module per concern
under `server/api/` (messages.py, inbox.py, checkins.py, ...). See docs/contracts.md."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentvisor import __version__
from agentvisor.errors import AgentvisorError, TooManyRequests
from agentvisor.server.api.agents import agents_router
from agentvisor.server.api.checkins import checkins_router
from agentvisor.server.api.egress import egress_router
from agentvisor.server.api.events import events_router
from agentvisor.server.api.git import git_router
from agentvisor.server.api.hot_routes import HotRoutes
from agentvisor.server.api.inbox import inbox_router
from agentvisor.server.api.limits import RequestSizeLimit, quota_gate
from agentvisor.server.api.messages import messages_router
from agentvisor.server.api.model import model_credentials, model_router
from agentvisor.server.api.models import route_doc, validation_detail
from agentvisor.server.api.projects import projects_router
from agentvisor.server.api.queue import queue_router
from agentvisor.server.api.status import status_router
from agentvisor.server.auth import Authenticator
from agentvisor.server.dashboard.routes import dashboard_router
from agentvisor.server.quotas import Quotas, retry_after_header
from agentvisor.server.service import Service


def _error(detail: str, status: int) -> JSONResponse:
    # A detail echoing bad input must still encode: a lone surrogate becomes its escape.
    safe = detail.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"detail": safe}, status_code=status)


def create_app(
    service: Service, auth: Authenticator, model_env: Mapping[str, str] | None = None
) -> FastAPI:
    quotas = Quotas(service.settings, service.store)
    app = FastAPI(
        title="agentvisor host API",
        version=__version__,
        description="Messages, check-ins and the agents' inboxes. See docs/contracts.md.",
        dependencies=[Depends(quota_gate(quotas, auth))],
        # FastAPI's OpenTelemetry hooks off: with none configured, they still look up three
        # providers (environment reads) on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = service
    _add_error_handlers(app)
    # The delivery hot path's common case below FastAPI (hot_routes.py); the size limit
    # outside it, so it holds for both.
    app.add_middleware(HotRoutes, service=service, auth=auth, quotas=quotas)
    app.add_middleware(RequestSizeLimit)

    credentials = model_credentials(service, model_env)
    app.include_router(git_router(service, auth))
    app.include_router(egress_router(service, auth), responses=route_doc(400, 403, 404, 507))
    app.include_router(
        model_router(service, auth, credentials), responses=route_doc(400, 403, 404, 507)
    )
    app.include_router(status_router(service, auth, credentials))
    app.include_router(projects_router(service, auth))
    app.include_router(agents_router(service, auth))
    app.include_router(messages_router(service, auth))
    app.include_router(checkins_router(service, auth))
    app.include_router(inbox_router(service, auth))
    app.include_router(events_router(service, auth))
    app.include_router(queue_router(service, auth))
    app.include_router(dashboard_router(service, auth), responses=route_doc(403, 404))
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is one JSON line, `{"detail": ...}`: domain errors, quotas, bad requests."""

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
