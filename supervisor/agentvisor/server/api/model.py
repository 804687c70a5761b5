"""The `/model/` routes of the host API: the credential broker for the model API, and the
usage and budget endpoints. Inside a sandbox `ANTHROPIC_BASE_URL` is
`http://127.0.0.1:7399/model` (the shim's relay to the API socket) and the agent's own token is
its stand-in API key; here it is exchanged for the host's credential and the request forwarded
to `model_upstream`, the answer streamed back unbuffered and its usage counted."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping

import httpx
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from agentvisor.errors import AgentvisorError, Forbidden, TooLarge, Unauthorized
from agentvisor.model.model_assist import ModelAssist
from agentvisor.model.model_broker import (
    AGENT_HEADER,
    DRY_RUN_CREDENTIAL,
    FORWARDED_PATHS,
    MAX_JSON_BODY,
    Credential,
    UsageMeter,
    downstream_headers,
    error_body,
    reset_time,
    stand_in,
    upstream_headers,
)
from agentvisor.model.model_login import CredentialSource, credential_source
from agentvisor.server.api.assist import assist_router
from agentvisor.server.api.models import MAX_ROW_ID, Name, NameQuery
from agentvisor.server.api.responses import UsageChart, UsageReport
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.model_usage import ModelAccounting
from agentvisor.server.service import Service
from agentvisor.store.database import Row, project_settings

log = logging.getLogger("agentvisor.model")
JSON = "application/json"


def model_credentials(service: Service, env: Mapping[str, str] | None = None) -> CredentialSource:
    """The host's credential as the settings name it; a refresh of its login is an event."""
    settings = service.settings
    env = dict(os.environ if env is None else env)

    def told(ok: bool, detail: str) -> None:
        kind = "model.login_refreshed" if ok else "model.login_refresh_failed"
        service.store.log_event(kind, data={"detail": detail[:500]})
        service.metrics.inc("model_login_refreshes" if ok else "model_login_refresh_failures")

    return credential_source(settings, env, service.store.clock.now, on_refresh=told)


# Per request: the answer's first byte may take long (a model thinking), each later one too.
UPSTREAM_TIMEOUT = httpx.Timeout(connect=15.0, read=600.0, write=60.0, pool=30.0).as_dict()


def upstream_transport(ca_file: str | None) -> httpx.AsyncHTTPTransport:
    """One connection pool for every agent. The upstream's CA: the setting's bundle only when
    set (a test CA is trusted by the broker and nothing else), else the system's. Requests go
    to the transport itself, not through an `httpx.AsyncClient`: its cookie jar, auth and
    redirect steps, which the broker has no use for, cost a fifth of a request's CPU."""
    verify: ssl.SSLContext | bool = True
    if ca_file:
        verify = ssl.create_default_context(cafile=ca_file)
    # TCP_NODELAY: httpx writes a request's head and body apart; with Nagle the body would
    # wait for the upstream's delayed ACK.
    return httpx.AsyncHTTPTransport(
        verify=verify,
        trust_env=False,  # the host's proxy variables and CA files are not the broker's
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=40),
    )


def _error(status: int, kind: str, message: str, **headers: str) -> Response:
    return Response(error_body(kind, f"agentvisor: {message}"), status, headers, media_type=JSON)


class BudgetBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    project: Name
    agent_tokens_per_day: int | None = Field(default=None, ge=0, le=MAX_ROW_ID)
    project_tokens: int | None = Field(default=None, ge=0, le=MAX_ROW_ID)
    project_hours: float | None = Field(default=None, ge=0, le=24 * 3660, allow_inf_nan=False)


def model_router(
    service: Service, auth: Authenticator, credentials: CredentialSource | None = None
) -> APIRouter:
    router = APIRouter()
    settings = service.settings
    source = credentials or model_credentials(service)
    accounting = ModelAccounting(service)
    upstream = settings.model_upstream.rstrip("/")
    pools: list[httpx.AsyncHTTPTransport] = []
    limit = settings.model_max_request_mb * 1024 * 1024

    def pool() -> httpx.AsyncHTTPTransport:
        if not pools:
            pools.append(upstream_transport(settings.model_upstream_ca))
        return pools[0]

    # agentvisor's own requests (model assist) use the broker's credential source: one
    # refresh of a login at a time. The queue's research step is one of them.
    assist = ModelAssist(settings, service.store, source)
    router.include_router(assist_router(service, auth, assist))
    if service.queue_runner is not None:
        service.queue_runner.assist = assist

    @router.on_event("shutdown")
    async def _close() -> None:
        for each in pools:
            await each.aclose()
        assist.close()

    def _agent(headers: Mapping[str, str]) -> Row:
        token = stand_in(headers)
        if not token:
            raise Unauthorized(
                "no stand-in key: the sandbox's ANTHROPIC_API_KEY must be the agent's token"
            )
        who = auth.caller(f"Bearer {token}")
        if who.agent is None:
            raise Forbidden("the model broker is for agents: the operator has a key of their own")
        return who.agent

    def _admit(
        headers: Mapping[str, str],
    ) -> tuple[Row, str | None, Credential | None, str | None]:
        """(agent, refusal, credential, the project's own upstream). A project's own upstream
        (a dry run's scripted model on loopback) gets no credential of the host's."""
        agent = _agent(headers)
        refusal = accounting.refusal(agent)
        project = service.store.get_project_by_id(agent["project_id"])
        own = project_settings(project).get("model")
        own_url = str(own["upstream"]) if isinstance(own, dict) and own.get("upstream") else None
        agent = {**agent, "project": project["name"]}
        if refusal:
            return agent, refusal, None, own_url
        return agent, None, DRY_RUN_CREDENTIAL if own_url else source.current(), own_url

    @router.api_route(
        "/model/{path:path}",
        methods=["GET", "POST", "HEAD", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    async def model(path: str, request: Request) -> Response:
        started = time.monotonic()
        if not FORWARDED_PATHS.fullmatch(path):
            return _error(
                404,
                "not_found_error",
                f"the model broker forwards the Messages API only, not /{path}",
            )
        try:
            # One trip to a worker thread: who calls, may it, and with which credential.
            agent, refusal, credential, own_url = await run_in_threadpool(_admit, request.headers)
        except AgentvisorError as exc:
            kinds = {401: "authentication_error", 403: "permission_error"}
            return _error(exc.status, kinds.get(exc.status, "api_error"), exc.message)
        if refusal is not None:
            service.metrics.inc("model_budget_refusals")
            return _error(429, "rate_limit_error", refusal, **{"x-agentvisor-refusal": "budget"})
        try:
            body = await _body(request, limit)
        except AgentvisorError as exc:
            return _error(exc.status, "request_too_large", exc.message)
        assert credential is not None  # _admit gives one whenever it refuses nothing

        async def send(with_credential: Credential) -> httpx.Response:
            outgoing_headers = upstream_headers(request.headers, with_credential)
            if own_url:
                outgoing_headers[AGENT_HEADER] = f"{agent['project']}/{agent['role']}"
            outgoing = httpx.Request(
                request.method,
                f"{own_url or upstream}/{path}",
                params=str(request.query_params),
                headers=outgoing_headers,
                content=body,
                extensions={"timeout": UPSTREAM_TIMEOUT},
            )
            answer = await pool().handle_async_request(outgoing)
            answer.request = outgoing
            return answer

        try:
            answer = await send(credential)
            if answer.status_code == 401 and credential.kind == "oauth":
                # The login was revoked or rotated early: one refresh, one retry.
                fresh = await run_in_threadpool(source.after_rejection, credential)
                if fresh is not None:
                    await answer.aclose()
                    credential = fresh
                    answer = await send(credential)
        except httpx.HTTPError as exc:
            await run_in_threadpool(
                _record, agent, path, 502, UsageMeter(False), None, None, started
            )
            return _error(502, "api_error", f"cannot reach the model upstream {upstream}: {exc}")
        secrets = (credential.secret, stand_in(request.headers) or "")
        headers = downstream_headers(answer.headers, secrets)
        streamed = answer.headers.get("content-type", "").startswith("text/event-stream")
        meter = UsageMeter(streamed)
        if answer.status_code >= 400:
            # Errors are small: read, count, then answer (a 429 pauses the agent before
            # Claude Code sees it).
            try:
                data = await _read_bounded(answer)
            finally:
                await answer.aclose()
            first_byte = (time.monotonic() - started) * 1000
            meter.feed(data)
            reset = None
            if answer.status_code == 429:
                reset = reset_time(answer.headers, service.store.clock.now())
            await run_in_threadpool(
                _record, agent, path, answer.status_code, meter, reset, first_byte, started
            )
            return Response(data, answer.status_code, headers)

        async def relay() -> AsyncIterator[bytes]:
            first_byte: float | None = None
            try:
                async for chunk in answer.aiter_raw():
                    if first_byte is None:
                        first_byte = (time.monotonic() - started) * 1000
                    meter.feed(chunk)
                    yield chunk
            finally:
                await answer.aclose()
                done = asyncio.get_running_loop().run_in_executor(
                    None, _record, agent, path, answer.status_code, meter, None, first_byte, started
                )
                await asyncio.shield(done)  # counted even when the agent hung up

        return StreamingResponse(relay(), answer.status_code, headers)

    def _record(
        agent: Row,
        path: str,
        status: int,
        meter: UsageMeter,
        reset: float | None,
        first_byte_ms: float | None,
        started: float,
    ) -> None:
        duration = (time.monotonic() - started) * 1000
        try:
            accounting.record(agent, path, status, meter.finish(), reset, first_byte_ms, duration)
        except Exception:  # the answer went out; a failed count is logged, never hidden
            log.exception("could not record model usage of agent %s", agent["id"])

    # -- usage and budgets -----------------------------------------------------------------
    async def caller(authorization: str | None = Header(default=None)) -> Caller:
        return auth.caller(authorization)  # on the loop: one indexed read (see api.py)

    @router.get("/v1/usage", response_model=UsageReport, response_model_exclude_unset=True)
    def usage(
        project: NameQuery = None,
        since: float = Query(0.0, ge=0, allow_inf_nan=False),
        who: Caller = Depends(caller),
    ) -> Row:
        return accounting.report(who, project, since)

    @router.post("/v1/budget", response_model=UsageReport, response_model_exclude_unset=True)
    def budget(body: BudgetBody, who: Caller = Depends(caller)) -> Row:
        values = {k: v for k, v in body.model_dump().items() if k != "project" and v is not None}
        return accounting.set_budget(who, body.project, values)

    @router.get("/v1/usage/chart", response_model=UsageChart)
    def chart(
        project: NameQuery = None,
        hours: float = Query(24.0, gt=0, le=24 * 31, allow_inf_nan=False),
        buckets: int = Query(48, ge=1, le=500),
        who: Caller = Depends(caller),
    ) -> Row:
        proj = service.project_for(who, project)
        now = service.store.clock.now()
        bucket_s = hours * 3600 / buckets
        return accounting.chart(proj, now - hours * 3600, bucket_s)

    return router


async def _body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise TooLarge(
            f"a model request of {length} bytes is over the limit (model_max_request_mb)"
        )
    parts = bytearray()
    async for chunk in request.stream():
        parts += chunk
        if len(parts) > limit:
            raise TooLarge("the model request is over the limit (model_max_request_mb)")
    return bytes(parts)


async def _read_bounded(answer: httpx.Response) -> bytes:
    data = bytearray()
    async for chunk in answer.aiter_raw():
        data += chunk
        if len(data) > MAX_JSON_BODY:
            raise httpx.ReadError("the upstream's error answer is over 4 MiB")
    return bytes(data)
