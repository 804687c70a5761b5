"""Repeated log lines, rate-limited: the first `limit` lines of a kind per interval pass,
then one line says the rest are dropped, and the next line after the interval says how many
were. A kind is the logger and the unformatted message, so one failure repeated under a
flood (a refused connection, an invalid request) costs a few lines, not megabytes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RepeatFilter(logging.Filter):
    def __init__(
        self,
        limit: int = 5,
        interval_s: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.limit = limit
        self.interval_s = interval_s
        self._monotonic = monotonic
        # kind -> [window start, lines seen in the window, dropped in the window]
        self._kinds: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.limit <= 0:
            return True
        kind = (record.name, str(record.msg))
        now = self._monotonic()
        with self._lock:
            state = self._kinds.get(kind)
            if state is None or now - state[0] >= self.interval_s:
                dropped = int(state[2]) if state is not None else 0
                self._kinds[kind] = [now, 1, 0]
                if len(self._kinds) > 10_000:  # kinds are code's messages: few; stay bounded
                    self._kinds = {kind: self._kinds[kind]}
                if dropped:
                    record.msg = f"{record.msg} [{dropped} more like this were dropped]"
                return True
            state[1] += 1
            if state[1] <= self.limit:
                return True
            if state[1] == self.limit + 1:
                record.msg = (
                    f"{record.msg} [the same line more than {self.limit} times in "
                    f"{self.interval_s:.0f} s: the rest are dropped for now]"
                )
                return True
            state[2] += 1
            return False


def install(limit: int, interval_s: float) -> RepeatFilter:
    """Put one `RepeatFilter` on every handler that exists (uvicorn's) and on a handler for
    the root logger (agentvisor's and asyncio's lines), all writing to stderr."""
    repeat = RepeatFilter(limit, interval_s)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))  # as logging.lastResort
        root.addHandler(handler)
    for name in [None, *logging.root.manager.loggerDict]:
        logger = logging.getLogger(name)
        for handler in getattr(logger, "handlers", []):
            if repeat not in handler.filters:
                handler.addFilter(repeat)
    return repeat
