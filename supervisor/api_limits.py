"""The host API's own limits, as ASGI middleware and a FastAPI dependency
(docs/limits.md): request bodies bounded while they stream, and the agents' quotas.

Plain ASGI rather than `@app.middleware("http")`, which would pass every streamed answer (the
model broker's, the git channel's, the pane stream's) through an extra queue and task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervisor.auth import Authenticator
from supervisor.errors import Unauthorized
from supervisor.quotas import Quotas, Who

MAX_REQUEST_BYTES = 2 * 1024 * 1024
# Routes with limits of their own (max_push_mb, model_max_request_mb), checked as they stream.
OWN_LIMITS = ("/git/", "/model/")


class BodyTooLarge(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail)


def _too_large(size: int, limit: int, declared: bool) -> str:
    what = f"request of {size} bytes" if declared else f"request body past {limit} bytes"
    return (
        f"{what} is over the {limit}-byte limit of the host API; send less "
        "(a message body, note or event of that size is refused anyway)"
    )


class RequestSizeLimit:
    """Refuse a body over `limit` bytes with 413: at once when Content-Length says so, else
    as soon as the streamed bytes (chunked bodies included) pass it, never reading more."""

    def __init__(self, app: ASGIApp, limit: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(OWN_LIMITS):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            detail = _too_large(int(length), self.limit, declared=True)
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(_too_large(received, self.limit, declared=False))
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:  # raised where no exception handler turned it into 413
            if started:
                raise
            response = JSONResponse({"detail": exc.detail}, status_code=413)
            await response(scope, receive, send)


QUOTA_ROUTES = {
    ("POST", "/v1/messages"): Quotas.message,
    ("POST", "/v1/checkins"): Quotas.checkin,
    ("POST", "/v1/events"): Quotas.event,
}


def quota_gate(quotas: Quotas, auth: Authenticator) -> Callable[[Request], Awaitable[None]]:
    """An app-wide dependency: the agents' writes that have a quota are counted here, before
    the route runs; anything else (and the operator) passes at once."""

    async def gate(request: Request) -> None:
        check = QUOTA_ROUTES.get((request.method, request.url.path))
        if check is None:
            return
        try:
            who = await run_in_threadpool(auth.caller, request.headers.get("authorization"))
        except Unauthorized:
            return  # the route's own dependency answers 401
        if who.agent is None:
            return
        size = len(await request.body())
        await run_in_threadpool(check, quotas, Who.of(who.agent), size)

    return gate
