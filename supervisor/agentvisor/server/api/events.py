"""Events: an agent posts one; the operator reads a project's."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from agentvisor.server.api.callers import caller_dependency
from agentvisor.server.api.models import (
    EventBody,
    NameQuery,
    route_doc,
)
from agentvisor.server.api.responses import Event
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.service import Service
from agentvisor.store.database import Row


def events_router(service: Service, auth: Authenticator) -> APIRouter:
    router = APIRouter()
    caller = caller_dependency(auth)
    svc = service

    @router.post(
        "/v1/events",
        status_code=201,
        response_model=Event,
        responses=route_doc(400, 403, 429, 507),
    )
    def post_event(body: EventBody, who: Caller = Depends(caller)) -> Row:
        return svc.event(who, body.kind, body.data)

    @router.get("/v1/events", response_model=list[Event], responses=route_doc(400, 403, 404))
    def events(
        project: NameQuery = None,
        limit: int = Query(100, ge=1, le=1000),
        who: Caller = Depends(caller),
    ) -> list[Row]:
        return svc.events(who, project, limit)

    return router
