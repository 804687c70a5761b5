"""The scheduler thread: sleeps until the earliest due check-in, fires it, sleeps again.

It is woken early when a check-in due sooner than its current wake-up is added, so there is no
fixed polling interval; `max_sleep_s` only bounds how long a check-in added by another process
(sharing the database) can wait to be noticed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agentvisor.store.database import Fired, Store

log = logging.getLogger("agentvisor.scheduler")


class Scheduler:
    def __init__(
        self,
        store: Store,
        on_fired: Callable[[list[Fired]], None] | None = None,
        max_sleep_s: float = 30.0,
        batch: int = 500,
    ) -> None:
        self.store = store
        self.on_fired = on_fired or (lambda fired: None)
        self.max_sleep_s = max_sleep_s
        self.batch = batch
        self._cond = threading.Condition()
        self._wake_at: float | None = None
        self._woken = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.fired_total = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="agentvisor-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def wake(self, due_at: float | None = None) -> None:
        """Tell the scheduler a check-in was added (or changed) that is due at `due_at`."""
        with self._cond:
            if due_at is None or self._wake_at is None or due_at < self._wake_at:
                self._woken = True
                self._cond.notify_all()

    def run_once(self) -> list[Fired]:
        """Fire everything due now (in batches). Returns what fired."""
        fired_all: list[Fired] = []
        while True:
            fired = self.store.fire_due(limit=self.batch)
            fired_all.extend(fired)
            if len(fired) < self.batch:
                break
        if fired_all:
            self.fired_total += len(fired_all)
            self.on_fired(fired_all)
        return fired_all

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
            try:
                self.run_once()
                next_due = self.store.next_due_at()
            except Exception:  # keep the scheduler alive: log, back off, retry
                log.exception("scheduler pass failed; retrying in 1 s")
                next_due = self.store.clock.now() + 1.0
            with self._cond:
                if self._stopping:
                    return
                self._wake_at = next_due
                if next_due is None:
                    timeout = self.max_sleep_s
                else:
                    timeout = min(self.max_sleep_s, max(0.0, next_due - self.store.clock.now()))
                if not self._woken and timeout > 0:
                    self._cond.wait(timeout)
                self._woken = False
                self._wake_at = None
