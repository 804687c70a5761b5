"""GET /v1/health, /metrics and /v1/whoami: is the server well, its counters, who am I."""

from __future__ import annotations

import shutil
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from agentvisor import __version__
from agentvisor.server.api.callers import caller_dependency
from agentvisor.server.api.model import CredentialSource
from agentvisor.server.api.models import (
    errors,
    json_errors,
    route_doc,
)
from agentvisor.server.api.responses import Health, Whoami
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.doctor import docker_problem
from agentvisor.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from agentvisor.server.metrics import StoreCollector
from agentvisor.server.service import Service


def status_router(
    service: Service, auth: Authenticator, credentials: CredentialSource
) -> APIRouter:
    router = APIRouter()
    caller = caller_dependency(auth)
    svc = service

    @router.get(
        "/v1/health",
        response_model=Health,
        response_model_exclude_unset=True,
        responses=errors(413),
    )
    def health() -> dict[str, Any]:
        result: dict[str, Any] = {"ok": True, "version": __version__}
        try:
            svc.store.check_writable()
            result["db"] = "ok"
        except Exception as exc:  # health reports, it does not fail
            result.update(ok=False, db=f"not writable: {exc}")
        free_mb = shutil.disk_usage(svc.settings.state_dir).free // (1024 * 1024)
        result["disk_free_mb"] = free_mb
        if free_mb < 200:
            result.update(ok=False, disk=f"only {free_mb} MiB free in {svc.settings.state_dir}")
        result["scheduler"] = "running" if svc.scheduler is not None else "off"
        problem = docker_problem()
        result["docker"] = "ok" if problem is None else f"not reachable: {problem}"
        if problem is not None:
            result["ok"] = False
        login = credentials.problem()  # the host's Claude Code login could not be refreshed
        if login is not None:
            result.update(ok=False, model_login=login)
        return result

    @router.get("/metrics", response_class=PlainTextResponse, responses=json_errors(413, 503))
    def metrics() -> PlainTextResponse:
        # prometheus_client writes the text, escaping every label value (agentvisor.server.metrics).
        text = svc.metrics.render(StoreCollector(svc.store))
        return PlainTextResponse(text, media_type=METRICS_CONTENT_TYPE)

    @router.get(
        "/v1/whoami",
        response_model=Whoami,
        response_model_exclude_unset=True,
        responses=route_doc(),
    )
    def whoami(who: Caller = Depends(caller)) -> dict[str, Any]:
        if who.agent is None:
            return {"kind": "operator"}
        project = svc.store.get_project_by_id(who.agent["project_id"])
        return {
            "kind": "agent",
            "project": project["name"],
            "role": who.agent["role"],
            "agent_id": who.agent["id"],
            "profile": who.agent["profile"],
        }

    return router
