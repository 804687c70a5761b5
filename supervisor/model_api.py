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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from supervisor.api_models import MAX_ROW_ID, Name, NameQuery
from supervisor.auth import Authenticator, Caller
from supervisor.errors import AgentvisorError, Forbidden, TooLarge, Unauthorized
from supervisor.model_broker import (
    AGENT_HEADER,
    DRY_RUN_CREDENTIAL,
    FORWARDED_PATHS,
    MAX_JSON_BODY,
    Credential,
    UsageMeter,
    credential_from_env,
    credential_from_login,
    downstream_headers,
    error_body,
    reset_time,
    stand_in,
    upstream_headers,
)
from supervisor.model_usage import ModelAccounting
from supervisor.service import Service
from supervisor.store import Row, project_settings

log = logging.getLogger("agentvisor.model")
JSON = "application/json"


class ModelUnavailable(AgentvisorError):
    status = 503


@dataclass
class CredentialSource:
    """The host's credential: its environment's key or token, else its Claude Code login,
    read again whenever the file changes (Claude Code on the host refreshes it there)."""

    env: Mapping[str, str]
    login_path: Path
    clock: Any = time.time
    _seen: tuple[int, int, int] | None = None
    _login: Credential | None = field(default=None, repr=False)

    def current(self) -> Credential:
        from_env = credential_from_env(self.env)
        if from_env is not None:
            return from_env
        try:
            stat = self.login_path.stat()
        except OSError:
            raise ModelUnavailable(
                "the host has no model credential: set ANTHROPIC_API_KEY (or "
                "ANTHROPIC_AUTH_TOKEN) where `agentvisor serve` runs, or log in with `claude` "
                f"on the host ({self.login_path})"
            ) from None
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            try:
                text = self.login_path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ModelUnavailable(
                    f"cannot read the host's login {self.login_path}: {exc}"
                ) from None
            self._login = credential_from_login(text, str(self.login_path))
            self._seen = seen
        if self._login is None:
            raise ModelUnavailable(
                f"{self.login_path} holds no Claude Code login: log in again with `claude`"
            )
        if self._login.expires_at is not None and self._login.expires_at < self.clock():
            raise ModelUnavailable(
                f"the host's Claude Code login ({self.login_path}) has expired: run `claude` on "
                "the host once (it refreshes the login; the broker reads the new one at once)"
            )
        return self._login


def default_login_path(settings_value: str | None, env: Mapping[str, str]) -> Path:
    if settings_value:
        return Path(settings_value).expanduser()
    return Path(env.get("HOME") or Path.home()) / ".claude" / ".credentials.json"


def upstream_client(ca_file: str | None) -> httpx.AsyncClient:
    """One pooled client for every agent. The upstream's CA: the setting's bundle only when
    set (a test CA is trusted by the broker and nothing else), else the system's."""
    verify: ssl.SSLContext | bool = True
    if ca_file:
        verify = ssl.create_default_context(cafile=ca_file)
    # TCP_NODELAY: httpx writes a request's head and body apart; with Nagle the body would
    # wait for the upstream's delayed ACK.
    transport = httpx.AsyncHTTPTransport(
        verify=verify,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=40),
    )
    return httpx.AsyncClient(
        transport=transport,
        trust_env=False,  # the host's proxy variables and CA files are not the broker's
        follow_redirects=False,
        timeout=httpx.Timeout(connect=15.0, read=600.0, write=60.0, pool=30.0),
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
    service: Service, auth: Authenticator, env: Mapping[str, str] | None = None
) -> APIRouter:
    router = APIRouter()
    settings = service.settings
    env = dict(os.environ if env is None else env)
    credentials = CredentialSource(
        env, default_login_path(settings.claude_credentials_file, env), service.store.clock.now
    )
    accounting = ModelAccounting(service)
    upstream = settings.model_upstream.rstrip("/")
    clients: list[httpx.AsyncClient] = []
    limit = settings.model_max_request_mb * 1024 * 1024

    def client() -> httpx.AsyncClient:
        if not clients:
            clients.append(upstream_client(settings.model_upstream_ca))
        return clients[0]

    @router.on_event("shutdown")
    async def _close() -> None:
        for each in clients:
            await each.aclose()

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
        return agent, None, DRY_RUN_CREDENTIAL if own_url else credentials.current(), own_url

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
        outgoing_headers = upstream_headers(request.headers, credential)
        if own_url:
            outgoing_headers[AGENT_HEADER] = f"{agent['project']}/{agent['role']}"
        outgoing = client().build_request(
            request.method,
            f"{own_url or upstream}/{path}",
            params=str(request.query_params),
            headers=outgoing_headers,
            content=body,
        )
        try:
            answer = await client().send(outgoing, stream=True)
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
    def caller(authorization: str | None = Header(default=None)) -> Caller:
        return auth.caller(authorization)

    @router.get("/v1/usage")
    def usage(
        project: NameQuery = None,
        since: float = Query(0.0, ge=0, allow_inf_nan=False),
        who: Caller = Depends(caller),
    ) -> Row:
        return accounting.report(who, project, since)

    @router.post("/v1/budget")
    def budget(body: BudgetBody, who: Caller = Depends(caller)) -> Row:
        values = {k: v for k, v in body.model_dump().items() if k != "project" and v is not None}
        return accounting.set_budget(who, body.project, values)

    @router.get("/v1/usage/chart")
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
