"""Check-ins: schedule one (once or recurring), list them, cancel one."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Response

from agentvisor.server.api.callers import caller_dependency
from agentvisor.server.api.models import (
    CheckinBody,
    NameQuery,
    RowId,
    route_doc,
)
from agentvisor.server.api.responses import Checkin, replayed
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.service import Service
from agentvisor.store.database import Row


def checkins_router(service: Service, auth: Authenticator) -> APIRouter:
    router = APIRouter()
    caller = caller_dependency(auth)
    svc = service

    @router.post(
        "/v1/checkins",
        status_code=201,
        response_model=Checkin,
        responses=route_doc(400, 403, 404, 413, 429, 507, ok=replayed(Checkin)),
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

    @router.get("/v1/checkins", response_model=list[Checkin], responses=route_doc(400, 403, 404))
    def checkins(
        project: NameQuery = None,
        state: NameQuery = "pending",
        limit: int = Query(200, ge=1, le=1000),
        who: Caller = Depends(caller),
    ) -> list[Row]:
        return svc.checkins(who, project, state if state != "all" else None, limit)

    @router.delete(
        "/v1/checkins/{checkin_id}",
        response_model=Checkin,
        responses=route_doc(403, 404, 409, 507),
    )
    def cancel_checkin(checkin_id: RowId, who: Caller = Depends(caller)) -> Row:
        return svc.cancel_checkin(who, checkin_id)

    return router
