"""The `Depends` every router uses to learn who is calling: the bearer token's caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Header

from agentvisor.server.auth import Authenticator, Caller


def caller_dependency(auth: Authenticator) -> Callable[..., Awaitable[Caller]]:
    # Async, so on the event loop: a token check is one indexed read, cheaper than the hop to
    # a worker thread that FastAPI makes for a plain `def` dependency.
    async def caller(authorization: str | None = Header(default=None)) -> Caller:
        return auth.caller(authorization)

    return caller
