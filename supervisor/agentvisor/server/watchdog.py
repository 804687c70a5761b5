"""The watchdog thread: brings back sandboxes that died, gives up on ones that keep dying, and
nudges agents whose pane has not changed for a while although they have undelivered work.

Docker's restart policy restarts a crashed sandbox with its own backoff; the watchdog starts the
ones Docker left down and counts restarts. The orchestrator is told of every give-up and nudge.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentvisor.core.recurrence import format_duration
from agentvisor.errors import AgentvisorError
from agentvisor.store.database import AGENTVISOR, Row

if TYPE_CHECKING:
    from agentvisor.sandbox.sandboxes import SandboxBackend
    from agentvisor.server.service import Service

log = logging.getLogger("agentvisor.watchdog")


@dataclass(frozen=True)
class StallCheck:
    """Whether an agent is stalled: pure, from its row, its pending messages and the time."""

    stalled: bool
    idle_s: float


def stall_of(agent: Row, pending: list[Row], now: float, stall_s: float) -> StallCheck:
    if not pending or agent.get("state") in ("failed", "done", "paused", "exited"):
        return StallCheck(False, 0.0)
    if agent.get("paused_until") and agent["paused_until"] > now:
        return StallCheck(False, 0.0)
    changed = agent.get("pane_changed_at")
    if not changed:
        return StallCheck(False, 0.0)
    idle = now - changed
    waiting = now - min(m["created_at"] for m in pending)
    return StallCheck(idle >= stall_s and waiting >= stall_s, idle)


REVIVE_WINDOW_S = 3600.0  # revives older than this no longer count toward max_restarts
# While the engine's event stream tells the watchdog of every sandbox that dies or starts, the
# sandboxes are looked at on each such event and otherwise this seldom: an idle host does not
# inspect every sandbox every few seconds. Stalls (the database only) are checked every
# `watchdog_interval_s` all the same; without the stream, so are the sandboxes, as before.
QUIET_PASS_S = 60.0
EVENTS_RETRY_S = 5.0
WAKING_ACTIONS = frozenset({"die", "start", "restart", "oom", "destroy"})


@dataclass
class ReviveLog:
    """The watchdog's own restarts of each sandbox (Docker's RestartCount does not count a
    start after `docker kill`), within the last REVIVE_WINDOW_S; pure, the clock passed in."""

    times: dict[tuple[str, str], list[float]]

    def add(self, key: tuple[str, str], now: float) -> None:
        self.times.setdefault(key, []).append(now)

    def count(self, key: tuple[str, str], now: float) -> int:
        recent = [t for t in self.times.get(key, []) if now - t < REVIVE_WINDOW_S]
        self.times[key] = recent
        return len(recent)

    def forget(self, key: tuple[str, str]) -> None:
        self.times.pop(key, None)


class Watchdog:
    def __init__(
        self, service: Service, backend_factory: Callable[[], SandboxBackend] | None = None
    ) -> None:
        self.service = service
        self.store = service.store
        self.settings = service.settings
        self._backend_factory = backend_factory
        self.revives = ReviveLog({})
        self._backend: SandboxBackend | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # a sandbox died or started: a pass now
        self._events_live = threading.Event()  # the engine's event stream is being read
        self._events: Any = None
        self._thread: threading.Thread | None = None
        self._events_thread: threading.Thread | None = None

    def backend(self) -> SandboxBackend:
        if self._backend is None:
            if self._backend_factory is not None:
                self._backend = self._backend_factory()
            else:
                from agentvisor.sandbox.sandboxes import SandboxBackend

                self._backend = SandboxBackend(self.settings)
        return self._backend

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="agentvisor-watchdog", daemon=True)
        self._thread.start()
        self._events_thread = threading.Thread(
            target=self._watch_engine, name="agentvisor-watchdog-events", daemon=True
        )
        self._events_thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with contextlib.suppress(Exception):
            if self._events is not None:
                self._events.close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        looked_at = -math.inf  # when the sandboxes were last looked at
        while not self._stop.is_set():
            woken = self._wake.wait(self.settings.watchdog_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            quiet_s = QUIET_PASS_S if self._events_live.is_set() else 0.0
            sandboxes = woken or time.monotonic() - looked_at >= quiet_s
            try:
                self.run_once(sandboxes=sandboxes)
            except Exception:  # never let one bad pass stop the watchdog
                log.exception("watchdog pass failed")
            if sandboxes:
                looked_at = time.monotonic()

    def _watch_engine(self) -> None:
        """Wake the watchdog whenever a sandbox of this state dir dies or starts."""
        while self.settings.watchdog_events and not self._stop.is_set():
            try:
                self._events = self.backend().container_events()
                self._events_live.set()
                self._wake.set()  # a pass at once: anything missed before the stream began
                for event in self._events:
                    if event.get("Action") in WAKING_ACTIONS:
                        self._wake.set()
            except Exception as exc:  # no engine, or a backend without events: poll
                log.debug("no engine events (%s); the watchdog polls", exc)
            self._events_live.clear()
            self._events = None
            self._stop.wait(EVENTS_RETRY_S)

    def run_once(self, sandboxes: bool = True) -> None:
        """One pass: the sandboxes (when `sandboxes`), then the stalled agents."""
        now = self.store.clock.now()
        agents = self.store.list_agents()
        if not agents:
            return
        if sandboxes:
            self._sandboxes(agents)
        for agent in agents:
            check = stall_of(
                agent,
                self.store.pending_messages(agent["id"]),
                now,
                self.settings.stall_minutes * 60,
            )
            if check.stalled and not agent["nudge_at"]:
                self._nudge(agent, check, now)

    def _sandboxes(self, agents: list[Row]) -> None:
        now = self.store.clock.now()
        projects = {p["id"]: p["name"] for p in self.store.list_projects()}
        by_key = {(projects.get(a["project_id"]), a["role"]): a for a in agents}
        try:
            backend = self.backend()
            revived_now, sandboxes = backend.revive_and_list()
            for revived in revived_now:
                key = (revived.project, revived.role)
                self.revives.add(key, now)
                agent = by_key.get(key)
                if agent is not None:
                    self.store.log_event("sandbox.revived", agent["project_id"], agent["id"])
        except AgentvisorError as exc:  # engine down: health shows it; try again next pass
            log.warning("sandboxes not checked: %s", exc)
            return

        def restarts(sandbox: Any) -> int:  # Docker's own and the watchdog's
            return int(sandbox.restart_count) + self.revives.count(
                (sandbox.project, sandbox.role), now
            )

        self.service.metrics.set_gauge(
            "sandbox_restarts",
            "Restarts of each sandbox since it was last started by hand (Docker's, and the "
            "watchdog's within the last hour).",
            (({"project": s.project, "role": s.role}, restarts(s)) for s in sandboxes),
        )
        for sandbox in sandboxes:
            agent = by_key.get((sandbox.project, sandbox.role))
            if agent is None or agent["state"] == "failed":
                continue
            if restarts(sandbox) >= self.settings.max_restarts:
                self._give_up(agent, sandbox, restarts(sandbox))
                self.revives.forget((sandbox.project, sandbox.role))

    def _give_up(self, agent: Row, sandbox: Any, restarts: int) -> None:
        with contextlib.suppress(AgentvisorError):
            self.backend().stop(sandbox.project, sandbox.role)
        self.store.update_agent(agent["id"], state="failed")
        self.store.log_event(
            "sandbox.failed", agent["project_id"], agent["id"], {"restarts": restarts}
        )
        self.service.metrics.inc("sandboxes_given_up")
        self._tell_orchestrator(
            agent,
            f"The sandbox of {agent['role']} crashed "
            f"{restarts} times and was stopped; its "
            "messages are kept. Run 'agentvisor resume' after "
            "fixing the cause.",
            f"failed-{agent['id']}",
        )

    def _nudge(self, agent: Row, check: StallCheck, now: float) -> None:
        self.store.update_agent(agent["id"], nudge_at=now)
        self.store.log_event(
            "agent.nudged", agent["project_id"], agent["id"], {"idle_s": round(check.idle_s)}
        )
        self.service.metrics.inc("nudges")
        self._tell_orchestrator(
            agent,
            f"{agent['role']} has shown no activity for "
            f"{format_duration(check.idle_s)} although messages wait for it; it was "
            "nudged. Check on it (agentvisor logs / attach).",
            f"stall-{agent['id']}-{int(agent['pane_changed_at'] or 0)}",
        )

    def _tell_orchestrator(self, agent: Row, text: str, key: str) -> None:
        if agent["role"] == "orchestrator":
            return
        try:
            orchestrator = self.store.get_agent(agent["project_id"], "orchestrator")
        except AgentvisorError:
            return
        self.store.add_message(
            agent["project_id"],
            AGENTVISOR,
            orchestrator["id"],
            text,
            kind="notice",
            idempotency_key=key,
        )
        self.service.waiters.notify([orchestrator["id"]])
