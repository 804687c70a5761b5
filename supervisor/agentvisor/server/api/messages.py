"""Messages: send one (the hot path), list them, the operator's actions on one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from agentvisor.server.api.callers import caller_dependency
from agentvisor.server.api.models import (
    ActionBody,
    NameQuery,
    RowId,
    SendBody,
    route_doc,
)
from agentvisor.server.api.responses import Message, documented, replayed
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.service import Service
from agentvisor.store.database import Row


def messages_router(service: Service, auth: Authenticator) -> APIRouter:
    router = APIRouter()
    caller = caller_dependency(auth)
    svc = service

    @router.post(
        "/v1/messages",
        status_code=201,
        response_model=Any,  # a hot route: documented only (responses.documented)
        responses=route_doc(
            400,
            403,
            404,
            413,
            429,
            507,
            ok={**documented(201, Message, "The message, queued."), **replayed(Message)},
        ),
    )
    async def send(body: SendBody, response: Response, who: Caller = Depends(caller)) -> Row:
        message, created = await svc.write(
            lambda: svc.send(who, body.to, body.body, body.kind, body.idempotency_key, body.project)
        )
        if not created:
            response.status_code = 200
        return message

    @router.get("/v1/messages", response_model=list[Message], responses=route_doc(400, 403, 404))
    def messages(
        project: NameQuery = None,
        recipient: NameQuery = None,
        state: NameQuery = None,
        limit: int = Query(50, ge=1, le=500),
        who: Caller = Depends(caller),
    ) -> list[Row]:
        return svc.messages(who, project, recipient, state, limit)

    @router.post(
        "/v1/messages/{message_id}/action",
        response_model=Message,
        responses=route_doc(400, 403, 404, 409, 507),
    )
    def message_action(message_id: RowId, body: ActionBody, who: Caller = Depends(caller)) -> Row:
        return svc.change_message(who, message_id, body.action)

    return router
