"""The agents: register one (its token), list them; an agent's heartbeat and its report of done."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from agentvisor.server.api.callers import caller_dependency
from agentvisor.server.api.models import (
    AgentBody,
    DoneBody,
    HeartbeatBody,
    NameQuery,
    route_doc,
)
from agentvisor.server.api.responses import (
    Agent,
    DoneLogged,
    HeartbeatAnswer,
    Message,
    RegisteredAgent,
    documented,
)
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.service import Service
from agentvisor.store.database import Row


def agents_router(service: Service, auth: Authenticator) -> APIRouter:
    router = APIRouter()
    caller = caller_dependency(auth)
    svc = service

    @router.post(
        "/v1/agents",
        status_code=201,
        response_model=RegisteredAgent,
        responses=route_doc(400, 403, 404, 507),
    )
    def register_agent(
        body: AgentBody, request: Request, who: Caller = Depends(caller)
    ) -> dict[str, Any]:
        agent, token = svc.register_agent(who, body.project, body.role, body.profile)
        # The sandbox's own socket (agentvisor.sandbox.sandbox_sockets), when the server serves one.
        on_registered = getattr(request.app.state, "on_agent_registered", None)
        if on_registered is not None:
            on_registered(body.project, agent["role"])
        return {**_public_agent(agent), "token": token}

    @router.get("/v1/agents", response_model=list[Agent], responses=route_doc(400, 403, 404))
    def agents(project: NameQuery = None, who: Caller = Depends(caller)) -> list[dict[str, Any]]:
        return [_public_agent(a) for a in svc.agents(who, project)]

    @router.post(
        "/v1/done",
        response_model=Message | DoneLogged,
        responses=route_doc(400, 403, 404, 413, 507),
    )
    def done(body: DoneBody, who: Caller = Depends(caller)) -> Row:
        return svc.done(who, body.summary)

    @router.post(
        "/v1/heartbeat",
        response_model=Any,  # a hot route: documented only (responses.documented)
        responses=route_doc(
            403, 507, ok=documented(200, HeartbeatAnswer, "A sign of life recorded.")
        ),
    )
    async def heartbeat(body: HeartbeatBody, who: Caller = Depends(caller)) -> dict[str, Any]:
        return await svc.write(lambda: svc.heartbeat(who, body.state, body.info))

    return router


def _public_agent(agent: Row) -> dict[str, Any]:
    return {k: v for k, v in agent.items() if k != "token_hash"}
