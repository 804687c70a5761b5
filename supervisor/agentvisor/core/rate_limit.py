"""Sliding-window rate limits, pure: the caller passes the time, nothing here reads a clock.

`SlidingWindow(limit, window_s)` lets at most `limit` hits per key in any `window_s` seconds
and says, for a refused hit, how long until one more would be let through. Written here
rather than taken from `limits`: that library reads `time.time()` itself, and agentvisor's
quotas must follow the server's injectable clock (agentvisor.clock) so tests can move it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable


class SlidingWindow:
    """At most `limit` hits per key in any window of `window_s` seconds (a sliding log)."""

    def __init__(self, limit: int, window_s: float) -> None:
        if limit < 0 or window_s <= 0:
            raise ValueError("limit must be >= 0 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[Hashable, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: Hashable, now: float) -> float | None:
        """Record one hit for `key` at `now`: None when allowed, else the seconds to wait
        before a hit would be allowed (a refused hit is not recorded)."""
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            self._expire(hits, now)
            if len(hits) >= self.limit:
                if not hits:  # limit 0: never
                    return self.window_s
                return max(hits[0] + self.window_s - now, 0.001)
            hits.append(now)
            return None

    def used(self, key: Hashable, now: float) -> int:
        """Hits of `key` inside the window ending at `now`."""
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                return 0
            self._expire(hits, now)
            return len(hits)

    def _expire(self, hits: deque[float], now: float) -> None:
        # A clock moved backwards keeps the hits (never frees the window early).
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()


class PerKeyCounter:
    """Open things per key (connections per sandbox), with a limit per key and in all."""

    def __init__(self, per_key: int, total: int) -> None:
        self.per_key = per_key
        self.total = total
        self._counts: dict[Hashable, int] = {}
        self._sum = 0

    def acquire(self, key: Hashable) -> str | None:
        """Take one for `key`: None when taken, else which limit refused it ("key"/"total")."""
        if self._sum >= self.total:
            return "total"
        count = self._counts.get(key, 0)
        if count >= self.per_key:
            return "key"
        self._counts[key] = count + 1
        self._sum += 1
        return None

    def release(self, key: Hashable) -> None:
        count = self._counts.get(key, 0)
        if count <= 1:
            self._counts.pop(key, None)
        else:
            self._counts[key] = count - 1
        if count > 0:
            self._sum -= 1

    def count(self, key: Hashable | None = None) -> int:
        return self._sum if key is None else self._counts.get(key, 0)


class Pacer:
    """A token bucket per key that paces rather than refuses: `rate` per second, bursts of
    `burst`. `delay(key, now)` reserves the next token and says how long to wait for it."""

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._next: dict[Hashable, float] = {}  # key -> when its next token is free

    def delay(self, key: Hashable, now: float) -> float:
        earliest = now - (self.burst - 1) / self.rate  # a full bucket: a burst goes at once
        at = max(self._next.get(key, earliest), earliest)
        self._next[key] = at + 1 / self.rate
        return max(at - now, 0.0)
