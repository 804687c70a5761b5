"""The inbox's long poll and the lease answer, shared by the FastAPI route (inbox.py) and the
hot path below it (hot_routes.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from agentvisor.server.auth import Caller
from agentvisor.server.service import Service
from agentvisor.store.database import Row

# How often a long poll looks at its inbox when nothing woke it (docs/delivery.md).
INBOX_RECHECK_S = 5.0


def lease_answer(message: Row) -> dict[str, Any]:
    """A leased message as the shim gets it (`LeaseAnswer`)."""
    return {
        "message": message,
        "lease_id": message["lease_id"],
        "lease_expires_at": message["lease_expires_at"],
    }


async def long_poll(
    svc: Service, who: Caller, wait_s: float, is_disconnected: Callable[[], Awaitable[bool]]
) -> Row | None:
    """The agent's next message, leased, within `wait_s`; None when there is none by then,
    or when the poll's client went away or a newer poll superseded it."""
    agent = who.require_agent()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    generation = svc.waiters.begin_poll(agent["id"])
    while True:
        seen = svc.waiters.version(agent["id"])
        # Nothing for a poll whose shim went away, or that a newer poll or a release
        # superseded: the message stays queued for the one that asks next.
        if not svc.waiters.is_current(agent["id"], generation) or await is_disconnected():
            return None
        # A plain read on the loop first (an empty inbox is the common case); the lease
        # itself is a job of the store's writer thread (awaited, off the event loop).
        message = None
        pending = svc.store.has_pending(agent["id"])
        if pending:
            message = await svc.write(lambda: svc.lease(who))
        if message is not None:
            return message
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        # Woken at once by a new message for this agent (and by a release); the re-check
        # comes when a lease held on its messages runs out, and every INBOX_RECHECK_S
        # for anything else (a message queued by another process, a pause that ended).
        pause = min(remaining, INBOX_RECHECK_S)
        expiry = svc.store.next_lease_expiry(agent["id"]) if pending else None
        if expiry is not None:
            pause = min(pause, max(expiry - svc.store.clock.now(), 0.0) + 0.01)
        await svc.waiters.wait(agent["id"], pause, seen)
