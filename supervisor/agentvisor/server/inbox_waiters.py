"""Wakes long-polling inbox requests when a message for their agent is queued.

Notifications may come from any thread (the scheduler's, a request's); waiters live on the
server's event loop. Each agent has a version that every notification bumps: a request reads it
before it looks at the inbox and only waits while it is unchanged, so a message queued between
the look and the wait is never missed. A waiter also re-checks on its own every `recheck_s`,
which covers messages queued by another process and leases that expire.

Each agent's long polls also have a generation (`begin_poll`): a newer poll, or a release of
the agent's leases (a new shim starting, a sandbox stopped), supersedes the older ones, which
then answer "nothing" instead of leasing. So a poll left open by a shim that died cannot take
the next message for nobody (a ghost lease, held until it ran out 60 s later).
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict


class InboxWaiters:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[int, set[asyncio.Event]] = defaultdict(set)
        self._versions: dict[int, int] = defaultdict(int)
        self._polls: dict[int, int] = defaultdict(int)
        self._closed = False
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def begin_poll(self, agent_id: int) -> int:
        """A new long poll of `agent_id`: its generation, which supersedes every older one
        (woken at once to find it out)."""
        with self._lock:
            self._polls[agent_id] += 1
            generation = self._polls[agent_id]
        self.notify([agent_id])
        return generation

    def supersede(self, agent_ids: set[int] | list[int]) -> None:
        """End every open poll of these agents (their leases were released)."""
        with self._lock:
            for agent_id in set(agent_ids):
                self._polls[agent_id] += 1
        self.notify(agent_ids)

    def is_current(self, agent_id: int, generation: int) -> bool:
        with self._lock:
            return not self._closed and self._polls[agent_id] == generation

    def close(self) -> None:
        """The server stops: every open poll answers "nothing" now, so the graceful shutdown
        does not have to cancel them (one traceback each in the log)."""
        with self._lock:
            self._closed = True
            agents = list(self._events)
        self.notify(agents)

    def version(self, agent_id: int) -> int:
        """Read this before looking at the inbox; pass it to `wait`."""
        with self._lock:
            return self._versions[agent_id]

    async def wait(self, agent_id: int, timeout_s: float, seen: int | None = None) -> bool:
        """Wait until notified for `agent_id` or `timeout_s` passes. True when notified, at once
        when a notification came after `seen` was read."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        event = asyncio.Event()
        with self._lock:
            if seen is not None and self._versions[agent_id] != seen:
                return True
            self._events[agent_id].add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout=max(0.0, timeout_s))
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._events[agent_id].discard(event)
                if not self._events[agent_id]:
                    del self._events[agent_id]

    def notify(self, agent_ids: set[int] | list[int]) -> None:
        with self._lock:
            for agent_id in set(agent_ids):
                self._versions[agent_id] += 1
            events = [e for a in set(agent_ids) for e in self._events.get(a, ())]
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for event in events:
            loop.call_soon_threadsafe(event.set)
