"""The operator's API for egress: a project's allowlist and the requests the proxy saw
(`agentvisor egress ...`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from pydantic import BaseModel, ConfigDict, Field

from agentvisor.server.api.models import CleanText, Name, NameQuery
from agentvisor.server.api.responses import EgressRule, EgressRuleRemoved, Event
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.egress import allowlist
from agentvisor.server.service import Service
from agentvisor.store.database import Row

RequiredName = Annotated[str, Query(min_length=1, max_length=100), CleanText]
RequiredEntry = Annotated[str, Query(min_length=1, max_length=300), CleanText]


class RuleBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    project: Name
    entry: Annotated[str, Field(min_length=1, max_length=300), CleanText]
    origin: str = Field(default="operator", pattern=r"^(operator|up)$")


def egress_router(service: Service, auth: Authenticator) -> APIRouter:
    router = APIRouter()
    store, settings = service.store, service.settings

    async def operator(authorization: str | None = Header(default=None)) -> Caller:
        who = auth.caller(authorization)
        who.require_operator()
        return who

    @router.get("/v1/egress/rules", response_model=list[EgressRule])
    def rules(project: RequiredName, who: Caller = Depends(operator)) -> list[Row]:
        return allowlist.listing(settings, store, store.get_project(project)["id"])

    @router.post("/v1/egress/rules", status_code=201, response_model=EgressRule)
    def allow(body: RuleBody, who: Caller = Depends(operator)) -> Row:
        project = store.get_project(body.project)
        return allowlist.allow(store, project["id"], body.entry, body.origin)

    @router.delete("/v1/egress/rules", response_model=EgressRuleRemoved)
    def deny(project: RequiredName, entry: RequiredEntry, who: Caller = Depends(operator)) -> Row:
        return allowlist.deny(settings, store, store.get_project(project)["id"], entry)

    @router.get("/v1/egress/requests", response_model=list[Event])
    def requests(
        project: NameQuery = None,
        denied: bool = False,
        limit: int = Query(200, ge=1, le=5000),
        who: Caller = Depends(operator),
    ) -> list[dict[str, Any]]:
        project_id = store.get_project(project)["id"] if project else None
        return allowlist.requests(store, project_id, denied, max(1, min(limit, 5000)))

    return router
