"""Per-agent quotas on the host API (docs/limits.md): messages and events per minute,
pending check-ins per agent, bytes stored per project. Over one: `TooManyRequests` (429 with
Retry-After), raised before anything is written, so nothing already accepted is touched.

The windows follow the store's clock (injectable, agentvisor.clock). The operator is
never counted.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from agentvisor.clock import Clock
from agentvisor.config import Settings
from agentvisor.core.rate_limit import SlidingWindow
from agentvisor.errors import TooManyRequests
from agentvisor.store.database import Row, Store

WINDOW_S = 60.0
STORED_BYTES_REFRESH_S = 60.0  # the project's stored bytes are counted again this often
MB = 1024 * 1024


def retry_after_header(seconds: float) -> str:
    """HTTP's Retry-After: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


@dataclass(frozen=True)
class Who:
    """The agent a quota is charged to."""

    agent_id: int
    project_id: int
    role: str

    @classmethod
    def of(cls, agent: Row) -> Who:
        return cls(int(agent["id"]), int(agent["project_id"]), str(agent["role"]))


class Quotas:
    def __init__(self, settings: Settings, store: Store, clock: Clock | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or store.clock
        self._messages = SlidingWindow(settings.agent_messages_per_minute, WINDOW_S)
        self._events = SlidingWindow(settings.agent_events_per_minute, WINDOW_S)
        self._stored: dict[int, tuple[float, int]] = {}  # project -> (counted at, bytes)
        self._lock = threading.Lock()

    # -- the checks, one per kind of write -------------------------------------------------
    def message(self, who: Who, size: int) -> None:
        self._rate(
            self._messages,
            who,
            "messages",
            "agent_messages_per_minute",
            self.settings.agent_messages_per_minute,
        )
        self._bytes(who, size)

    def event(self, who: Who, size: int) -> None:
        self._rate(
            self._events,
            who,
            "events",
            "agent_events_per_minute",
            self.settings.agent_events_per_minute,
        )
        self._bytes(who, size)

    def checkin(self, who: Who, size: int) -> None:
        limit = self.settings.agent_pending_checkins_max
        if limit > 0:
            pending = self.pending_checkins(who)
            if pending >= limit:
                raise TooManyRequests(
                    f"agent {who.role} has {pending} pending check-ins, the limit "
                    f"(setting agent_pending_checkins_max={limit}); retry once some have "
                    "fired or been cancelled",
                    WINDOW_S,
                )
        self._bytes(who, size)

    # -- the parts -------------------------------------------------------------------------
    def _rate(self, window: SlidingWindow, who: Who, what: str, setting: str, limit: int) -> None:
        if limit <= 0:
            return
        wait_s = window.hit(who.agent_id, self.clock.now())
        if wait_s is not None:
            raise TooManyRequests(
                f"agent {who.role} sent {limit} {what} in the last {WINDOW_S:.0f} s, the "
                f"limit (setting {setting}={limit}); retry in {retry_after_header(wait_s)} s",
                wait_s,
            )

    def _bytes(self, who: Who, size: int) -> None:
        limit_mb = self.settings.project_stored_mb_max
        if limit_mb <= 0:
            return
        limit = limit_mb * MB
        with self._lock:
            stored = self._stored_bytes(who.project_id)
            if stored + size > limit:
                raise TooManyRequests(
                    f"project of agent {who.role} stores {stored} bytes of message bodies, "
                    f"check-in notes and event data; {size} more would pass the limit of "
                    f"{limit_mb} MiB (setting project_stored_mb_max={limit_mb}); retry after "
                    "the operator raises it",
                    STORED_BYTES_REFRESH_S,
                )
            counted_at, _ = self._stored[who.project_id]
            self._stored[who.project_id] = (counted_at, stored + size)

    def _stored_bytes(self, project_id: int) -> int:
        now = self.clock.now()
        cached = self._stored.get(project_id)
        if cached is not None and 0 <= now - cached[0] < STORED_BYTES_REFRESH_S:
            return cached[1]
        stored = self.stored_bytes(project_id)
        self._stored[project_id] = (now, stored)
        return stored

    def stored_bytes(self, project_id: int) -> int:
        """What the project holds now: bodies, notes and event data, in bytes."""
        row = self.store.fetch_one(
            "SELECT (SELECT COALESCE(SUM(LENGTH(CAST(body AS BLOB))), 0) FROM messages"
            "        WHERE project_id = :p)"
            " + (SELECT COALESCE(SUM(LENGTH(CAST(note AS BLOB))), 0) FROM checkins"
            "    WHERE project_id = :p)"
            " + (SELECT COALESCE(SUM(LENGTH(CAST(data AS BLOB))), 0) FROM events"
            "    WHERE project_id = :p) AS n",
            {"p": project_id},
        )
        return int(row["n"]) if row else 0

    def pending_checkins(self, who: Who) -> int:
        row = self.store.fetch_one(
            "SELECT COUNT(*) AS n FROM checkins WHERE project_id = ? AND creator = ? "
            "AND state = 'pending'",
            (who.project_id, who.role),
        )
        return int(row["n"]) if row else 0
