"""The host API's own limits, as ASGI middleware and a FastAPI dependency
(docs/limits.md): request bodies bounded while they stream, the agents' quotas, and each
sandbox's requests in the app at once.

Plain ASGI rather than `@app.middleware("http")`, which would pass every streamed answer (the
model broker's, the git channel's, the pane stream's) through an extra queue and task.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentvisor.core.rate_limit import Pacer
from agentvisor.errors import Unauthorized
from agentvisor.server.auth import Authenticator
from agentvisor.server.quotas import Quotas, Who

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
            who = auth.caller(request.headers.get("authorization"))  # one indexed read
        except Unauthorized:
            return  # the route's own dependency answers 401
        if who.agent is None:
            return
        size = len(await request.body())
        await run_in_threadpool(check, quotas, Who.of(who.agent), size)

    return gate


class FairShare:
    """Requests of sandboxes take turns: at most `slots` run at once, and a free slot goes to
    the next sandbox in turn with one waiting, so a sandbox with a hundred waiting gets no
    more turns than one with one (round robin over sandboxes, first come within each)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.active = 0
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    async def acquire(self, key: str) -> None:
        if self.active < self.slots and not self._waiting:
            self.active += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # the slot was handed over as the request went away
            else:
                queue = self._waiting.get(key)
                if queue is not None and turn in queue:
                    queue.remove(turn)
                    if not queue:
                        del self._waiting[key]
            raise

    def release(self) -> None:
        while self._waiting:
            key, queue = next(iter(self._waiting.items()))
            turn = queue.popleft()
            if queue:
                self._waiting.move_to_end(key)  # its next one waits for every other's turn
            else:
                del self._waiting[key]
            if not turn.done():
                turn.set_result(None)  # the slot passes on: `active` stays
                return
        self.active -= 1


# Requests that mostly wait (a long-poll, a git stream, the model's answer) do not take a
# turn: they would hold it without using the server.
WAITING_ROUTES = ("/v1/inbox/lease", "/git/", "/model/")


class SandboxRequestLimit:
    """A sandbox's requests, in the app: at most `per_second` on average (bursts of twice
    that), at most `per_sandbox` at once (its further ones wait on its own socket, never
    refused), and those that work take turns with every other sandbox's in a `FairShare` of
    `slots`. The sandbox is the listener the request came in on
    (`scope["server"]`); the host's socket (the operator) passes at once."""

    def __init__(
        self,
        app: ASGIApp,
        sandbox_root: str,
        per_sandbox: int,
        slots: int,
        per_second: float = 0.0,
    ) -> None:
        self.app = app
        self.sandbox_root = sandbox_root.rstrip("/") + "/"
        self.per_sandbox = per_sandbox
        self.fair = FairShare(slots)
        # Paced, not refused: a sandbox past its rate waits, which costs the server nothing.
        self.pacer = Pacer(per_second, max(per_second * 2, 1)) if per_second > 0 else None
        self._gates: dict[str, asyncio.Semaphore] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server") if scope["type"] == "http" else None
        listener = server[0] if server else None
        if not listener or not listener.startswith(self.sandbox_root):
            await self.app(scope, receive, send)
            return
        if self.pacer is not None:
            wait_s = self.pacer.delay(listener, asyncio.get_running_loop().time())
            if wait_s > 0:
                await asyncio.sleep(wait_s)
        gate = self._gates.get(listener)
        if gate is None:
            gate = self._gates[listener] = asyncio.Semaphore(max(self.per_sandbox, 1))
        async with gate:
            if scope["path"].startswith(WAITING_ROUTES) or self.fair.slots <= 0:
                await self.app(scope, receive, send)
                return
            await self.fair.acquire(listener)
            try:
                await self.app(scope, receive, send)
            finally:
                self.fair.release()
