"""The projects: register one, list them, its routing, state, model; release its leases."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from agentvisor.server.api.callers import caller_dependency
from agentvisor.server.api.models import (
    NamePath,
    ProjectBody,
    ProjectModelBody,
    ProjectStateBody,
    RoutingBody,
    route_doc,
)
from agentvisor.server.api.responses import Project, Released, Routing
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.service import Service
from agentvisor.store.database import Row


def projects_router(service: Service, auth: Authenticator) -> APIRouter:
    router = APIRouter()
    caller = caller_dependency(auth)
    svc = service

    @router.post("/v1/projects", response_model=Project, responses=route_doc(403, 507))
    def create_project(body: ProjectBody, who: Caller = Depends(caller)) -> Row:
        who.require_operator()
        return svc.store.upsert_project(body.name, body.path, body.spec_path, body.start_branch)

    @router.get("/v1/projects", response_model=list[Project], responses=route_doc(404))
    def projects(who: Caller = Depends(caller)) -> list[Row]:
        if who.agent is not None:
            return [svc.store.get_project_by_id(who.agent["project_id"])]
        return svc.store.list_projects()

    @router.get(
        "/v1/projects/{name}/routing", response_model=Routing, responses=route_doc(403, 404)
    )
    def project_routing(name: NamePath, who: Caller = Depends(caller)) -> Row:
        project = svc.project_for(who, name)
        return {"project": project["name"], **svc.routing(project).as_dict()}

    @router.post(
        "/v1/projects/{name}/routing", response_model=Routing, responses=route_doc(403, 404, 507)
    )
    def set_project_routing(
        name: NamePath, body: RoutingBody, who: Caller = Depends(caller)
    ) -> Row:
        return svc.set_routing(who, name, body.model_dump(exclude_none=True))

    @router.post(
        "/v1/projects/{name}/release", response_model=Released, responses=route_doc(403, 404, 507)
    )
    def project_release(name: NamePath, who: Caller = Depends(caller)) -> dict[str, int]:
        return {"released": svc.release_project(who, name)}

    @router.post(
        "/v1/projects/{name}/state", response_model=Project, responses=route_doc(403, 404, 507)
    )
    def project_state(name: NamePath, body: ProjectStateBody, who: Caller = Depends(caller)) -> Row:
        return svc.set_project_state(who, name, body.state)

    @router.post(
        "/v1/projects/{name}/model", response_model=Project, responses=route_doc(403, 404, 507)
    )
    def project_model(name: NamePath, body: ProjectModelBody, who: Caller = Depends(caller)) -> Row:
        return svc.set_project_model(who, name, body.upstream, body.script)

    return router
