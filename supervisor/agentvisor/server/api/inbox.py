"""The shim's inbox: the long-poll lease, ack, nack, extend, release (the delivery hot path)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from agentvisor.server.api.callers import caller_dependency
from agentvisor.server.api.inbox_poll import lease_answer, long_poll
from agentvisor.server.api.models import (
    LeaseAnswer,
    LeaseRef,
    NackBody,
    RowId,
    route_doc,
)
from agentvisor.server.api.responses import AckAnswer, Message, Released, documented
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.service import Service
from agentvisor.store.database import Row


def inbox_router(service: Service, auth: Authenticator) -> APIRouter:
    router = APIRouter()
    caller = caller_dependency(auth)
    svc = service

    @router.post(
        "/v1/inbox/lease",
        response_model=None,
        responses=route_doc(
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
        message = await long_poll(svc, who, wait_s, request.is_disconnected)
        return Response(status_code=204) if message is None else JSONResponse(lease_answer(message))

    @router.post(
        "/v1/inbox/{message_id}/ack",
        response_model=Any,  # the hot routes: documented only (responses.documented)
        responses=route_doc(403, 404, 409, 507, ok=documented(200, AckAnswer, "Delivered.")),
    )
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

    @router.post(
        "/v1/inbox/{message_id}/nack",
        response_model=Any,
        responses=route_doc(403, 404, 409, 507, ok=documented(200, Message, "Queued or failed.")),
    )
    async def nack(message_id: RowId, body: NackBody, who: Caller = Depends(caller)) -> Row:
        return await svc.write(
            lambda: svc.nack(who, message_id, body.lease_id, body.reason, body.retry)
        )

    @router.post(
        "/v1/inbox/{message_id}/extend",
        response_model=Any,
        responses=route_doc(403, 404, 409, 507, ok=documented(200, Message, "Lease renewed.")),
    )
    async def extend(message_id: RowId, body: LeaseRef, who: Caller = Depends(caller)) -> Row:
        return await svc.write(lambda: svc.extend(who, message_id, body.lease_id))

    @router.post("/v1/inbox/release", response_model=Released, responses=route_doc(403, 507))
    def release(who: Caller = Depends(caller)) -> dict[str, int]:
        return {"released": svc.release(who)}

    @router.get("/v1/inbox", response_model=list[Message], responses=route_doc(403))
    def inbox(who: Caller = Depends(caller)) -> list[Row]:
        return svc.inbox(who)

    return router
