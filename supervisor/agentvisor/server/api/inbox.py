"""The shim's inbox: the long-poll lease, ack, nack, extend, release (the delivery hot path)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from agentvisor.server.api.callers import caller_dependency
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

# How often a long poll looks at its inbox when nothing woke it (docs/delivery.md).
INBOX_RECHECK_S = 5.0


def lease_answer(message: Row) -> dict[str, Any]:
    """A leased message as the shim gets it (`LeaseAnswer`)."""
    return {
        "message": message,
        "lease_id": message["lease_id"],
        "lease_expires_at": message["lease_expires_at"],
    }


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
            # itself is a job of the store's writer thread (awaited, off the event loop).
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
