"""The delivery hot path served below FastAPI: send, the inbox's lease, ack, nack and extend,
and the heartbeat, in plain ASGI (docs/delivery.md#throughput).

FastAPI's routing, dependency solving and response validation cost ~0.6 ms of CPU per request,
two thirds of what the server spends on a `POST /v1/messages`. These routes take the common
case themselves: a known token, a body that validates, the usual query. They call the same
service methods, with the same models, and answer with the same JSON and status codes. Anything
else (no or an unknown token, a body that does not validate, an odd query) goes on to the
FastAPI app unchanged, body included, which gives its one canonical answer: so every error
message stays the app's own, and the FastAPI routes stay the contract (OpenAPI, docs/contracts.md).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentvisor.errors import AgentvisorError, TooManyRequests, Unauthorized
from agentvisor.server.api.inbox_poll import lease_answer, long_poll
from agentvisor.server.api.models import MAX_ROW_ID, HeartbeatBody, LeaseRef, NackBody, SendBody
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.quotas import Quotas, Who, retry_after_header
from agentvisor.server.service import Service

# An answer: (status, JSON payload, extra headers); None hands the request to FastAPI.
RawHeaders = list[tuple[bytes, bytes]]
Answer = tuple[int, Any, RawHeaders]
Handler = Callable[["HotRequest"], Awaitable[Answer | None]]

_INBOX_ACTION = re.compile(r"/v1/inbox/([1-9][0-9]{0,18})/(ack|nack|extend)")
_JSON = b"application/json"
_NUMBER = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")
_BOOLS = {"true": True, "1": True, "false": False, "0": False}  # FastAPI takes more spellings


class HotRequest:
    """One request on the hot path: its scope, its body, its caller and its parsed query."""

    def __init__(self, scope: Scope, receive: Receive, body: bytes, who: Caller) -> None:
        self.scope = scope
        self.receive = receive
        self.body = body
        self.who = who
        self.message_id = 0

    def json_body(self, model: type[BaseModel]) -> Any:
        """The body as `model`, or None when it is not one (FastAPI then says why)."""
        try:
            return model.model_validate(json.loads(self.body))
        except (ValueError, ValidationError):  # JSONDecodeError and UnicodeDecodeError too
            return None

    def query(self, **defaults: Any) -> dict[str, Any] | None:
        """The query's values for the names in `defaults` (their types), or None when there
        is any other name, a repeated one, or a value FastAPI might read otherwise."""
        raw = self.scope.get("query_string", b"")
        if not raw:
            return dict(defaults)
        values = dict(defaults)
        try:
            pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return None
        seen: set[str] = set()
        for name, value in pairs:
            parsed = _parse(value, defaults[name]) if name in defaults else None
            if parsed is None or name in seen:
                return None
            seen.add(name)
            values[name] = parsed
        return values

    async def is_disconnected(self) -> bool:
        return await Request(self.scope, self.receive).is_disconnected()


def _parse(value: str, default: Any) -> Any:
    if isinstance(default, bool):
        return _BOOLS.get(value)
    if isinstance(default, float) and _NUMBER.fullmatch(value):
        number = float(value)
        return number if number <= 60 else None  # wait_s: Query(ge=0, le=60)
    return None


class HotRoutes:
    """ASGI middleware in front of the FastAPI app: the hot routes' common case, served here."""

    def __init__(self, app: ASGIApp, service: Service, auth: Authenticator, quotas: Quotas) -> None:
        self.app = app
        self.svc = service
        self.auth = auth
        self.quotas = quotas
        self._fixed: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/messages"): self._send,
            ("POST", "/v1/inbox/lease"): self._lease,
            ("POST", "/v1/heartbeat"): self._heartbeat,
        }
        self._actions: dict[str, Handler] = {
            "ack": self._ack,
            "nack": self._nack,
            "extend": self._extend,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._route(scope) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        headers = _first(scope["headers"], (b"content-type", b"authorization"))
        body = await _read_body(receive)
        replay = _replaying(body, receive)
        if headers.get(b"content-type", _JSON).split(b";")[0].strip().lower() != _JSON:
            await self.app(scope, replay, send)
            return
        try:
            who = self.auth.caller(headers.get(b"authorization", b"").decode("latin-1"))
        except Unauthorized:
            await self.app(scope, replay, send)
            return
        request = HotRequest(scope, receive, body, who)
        match = _INBOX_ACTION.fullmatch(scope["path"])
        if match is not None:
            request.message_id = int(match.group(1))
        try:
            answer = await handler(request)
        except TooManyRequests as exc:
            retry = [(b"retry-after", retry_after_header(exc.retry_after_s).encode())]
            answer = (429, {"detail": exc.message}, retry)
        except AgentvisorError as exc:
            answer = (exc.status, {"detail": _safe(exc.message)}, [])
        except sqlite3.OperationalError as exc:
            detail = f"the state database is not available: {exc}; retry shortly"
            answer = (503, {"detail": _safe(detail)}, [])
        if answer is None:
            await self.app(scope, replay, send)
            return
        self.svc.metrics.inc("api_hot_path_requests")
        await _respond(send, *answer)

    def _route(self, scope: Scope) -> Handler | None:
        method, path = scope["method"], scope["path"]
        handler = self._fixed.get((method, path))
        if handler is not None or method != "POST" or not path.startswith("/v1/inbox/"):
            return handler
        match = _INBOX_ACTION.fullmatch(path)
        if match is None or int(match.group(1)) > MAX_ROW_ID:
            return None
        return self._actions[match.group(2)]

    # -- the routes (their FastAPI twins: messages.py, inbox.py, agents.py) ------------------
    async def _send(self, request: HotRequest) -> Answer | None:
        body = request.json_body(SendBody)
        if body is None or request.query() is None:
            return None
        who, svc = request.who, self.svc
        if who.agent is not None:  # quota_gate's check (api/limits.py), here after validation
            check = Quotas.message
            await run_in_threadpool(check, self.quotas, Who.of(who.agent), len(request.body))
        message, created = await svc.write(
            lambda: svc.send(who, body.to, body.body, body.kind, body.idempotency_key, body.project)
        )
        return (201 if created else 200), message, []

    async def _lease(self, request: HotRequest) -> Answer | None:
        query = request.query(wait_s=25.0)
        if query is None:  # the route reads no body
            return None
        message = await long_poll(self.svc, request.who, query["wait_s"], request.is_disconnected)
        return (204, None, []) if message is None else (200, lease_answer(message), [])

    async def _heartbeat(self, request: HotRequest) -> Answer | None:
        body = request.json_body(HeartbeatBody)
        if body is None or request.query() is None:
            return None
        who, svc = request.who, self.svc
        return 200, await svc.write(lambda: svc.heartbeat(who, body.state, body.info)), []

    async def _ack(self, request: HotRequest) -> Answer | None:
        body = request.json_body(LeaseRef)
        query = request.query(lease_next=False)
        if body is None or query is None:
            return None
        who, svc, message_id = request.who, self.svc, request.message_id
        if not query["lease_next"]:
            return 200, await svc.write(lambda: svc.ack(who, message_id, body.lease_id)), []
        acked, leased = await svc.write(lambda: svc.ack_and_lease(who, message_id, body.lease_id))
        return 200, {**acked, "next": None if leased is None else lease_answer(leased)}, []

    async def _nack(self, request: HotRequest) -> Answer | None:
        body = request.json_body(NackBody)
        if body is None or request.query() is None:
            return None
        who, svc, message_id = request.who, self.svc, request.message_id
        return (
            200,
            await svc.write(
                lambda: svc.nack(who, message_id, body.lease_id, body.reason, body.retry)
            ),
            [],
        )

    async def _extend(self, request: HotRequest) -> Answer | None:
        body = request.json_body(LeaseRef)
        if body is None or request.query() is None:
            return None
        who, svc, message_id = request.who, self.svc, request.message_id
        return 200, await svc.write(lambda: svc.extend(who, message_id, body.lease_id)), []


def _first(headers: RawHeaders, names: tuple[bytes, ...]) -> dict[bytes, bytes]:
    """The first value of each of `names`, as starlette's `Headers.get` reads it."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in names and name not in found:
            found[name] = value
    return found


def _safe(detail: str) -> str:
    # As the app's error handlers: a detail echoing bad input must still encode.
    return detail.encode("utf-8", "backslashreplace").decode("utf-8")


async def _read_body(receive: Receive) -> bytes:
    """The whole body (RequestSizeLimit, outside, bounds it as it streams)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # gone: the app below sees the disconnect too
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that gives `body` once, as one message, then what the client sends next."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(
    send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    if status == 204 or payload is None:
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    # As starlette's JSONResponse renders (FastAPI's answers of these routes)
    content = json.dumps(
        payload, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
    head = [
        (b"content-length", str(len(content)).encode()),
        (b"content-type", b"application/json"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": content})
