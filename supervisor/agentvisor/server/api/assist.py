"""The host API's route for model assist: `POST /v1/assist/team`, the operator's `plan/up
--refine`. The spec comes from the operator's CLI; the answer is the team to use and, when the
model's is not, why in one line (agentvisor.core.team_refinement)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header
from pydantic import Field

from agentvisor.core.spec import MAX_SPEC_BYTES
from agentvisor.core.team import MAX_ROLE_NAME_CHARS, MAX_TEAM_SIZE, plan_team
from agentvisor.model.model_assist import ModelAssist
from agentvisor.server.api.models import Name, Strict
from agentvisor.server.api.responses import TeamAnswer
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.service import Service
from agentvisor.store.database import Row

RoleName = Annotated[str, Field(min_length=1, max_length=MAX_ROLE_NAME_CHARS * 2)]


class RefineBody(Strict):
    project: Name
    spec: Annotated[str, Field(min_length=1, max_length=MAX_SPEC_BYTES)]
    roles: Annotated[list[RoleName], Field(max_length=MAX_TEAM_SIZE * 2)] | None = None
    team_type: Annotated[str, Field(max_length=64)] | None = None
    plan: Annotated[str, Field(max_length=16)] | None = None


def assist_router(service: Service, auth: Authenticator, assist: ModelAssist) -> APIRouter:
    router = APIRouter()

    async def caller(authorization: str | None = Header(default=None)) -> Caller:
        return auth.caller(authorization)

    @router.post("/v1/assist/team", response_model=TeamAnswer)
    def refine_team(body: RefineBody, who: Caller = Depends(caller)) -> Row:
        """The keyword team for the spec, refined by the model when it can (a worker thread:
        the model may take a while)."""
        who.require_operator()
        project = service.store.get_project(body.project)
        keyword = plan_team(body.spec, roles=body.roles, team_type=body.team_type, plan=body.plan)
        return assist.refine_team(project, body.spec, keyword).as_dict()

    return router
