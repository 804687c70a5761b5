"""Time as a parameter: the system clock for real runs, a settable one for tests."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """UTC epoch seconds."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when told to. Thread-safe."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def set(self, when: float) -> None:
        with self._lock:
            self._now = when

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now


class FileClock:
    """Reads an offset in seconds from a file at every call: lets tests move a running
    server's clock forward (`AGENTVISOR_CLOCK_OFFSET_FILE`). Never used unless configured."""

    def __init__(self, path: str) -> None:
        self._path = path

    def now(self) -> float:
        try:
            with open(self._path, encoding="utf-8") as f:
                offset = float(f.read().strip() or 0)
        except (OSError, ValueError):
            offset = 0.0
        return time.time() + offset
