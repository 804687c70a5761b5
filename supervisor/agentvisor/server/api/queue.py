"""The project queue: add a spec, list, read and cancel entries (`agentvisor queue`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from agentvisor.server.api.callers import caller_dependency
from agentvisor.server.api.models import (
    NameQuery,
    QueueBody,
    RowId,
    route_doc,
)
from agentvisor.server.api.responses import QueueEntry
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.service import Service
from agentvisor.store.database import Row


def queue_router(service: Service, auth: Authenticator) -> APIRouter:
    router = APIRouter()
    caller = caller_dependency(auth)
    svc = service

    @router.post(
        "/v1/queue",
        status_code=201,
        response_model=QueueEntry,
        responses=route_doc(400, 403, 507),
    )
    def queue_add(body: QueueBody, who: Caller = Depends(caller)) -> Row:
        return svc.queue_add(who, body.spec_path, body.project_dir, body.options)

    @router.get("/v1/queue", response_model=list[QueueEntry], responses=route_doc(403))
    def queue_list(state: NameQuery = None, who: Caller = Depends(caller)) -> list[Row]:
        return svc.queue_list(who, state)

    @router.get("/v1/queue/{queue_id}", response_model=QueueEntry, responses=route_doc(403, 404))
    def queue_get(queue_id: RowId, who: Caller = Depends(caller)) -> Row:
        return svc.queue_get(who, queue_id)

    @router.delete(
        "/v1/queue/{queue_id}", response_model=QueueEntry, responses=route_doc(403, 404, 409, 507)
    )
    def queue_cancel(queue_id: RowId, who: Caller = Depends(caller)) -> Row:
        return svc.queue_cancel(who, queue_id)

    return router
