"""`agentvisor load`: M messages from C client threads at R a second offered into N throwaway
demo sandboxes; accepted/s, verified deliveries/s, end-to-end latency from the store's own
timestamps, loss and doubles from both witnesses, and the server's CPU busy and idle."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from agentvisor.client import ApiClient
from agentvisor.drills.fleet import API_LIST_MAX, Fleet, Progress, wait_for
from agentvisor.drills.tally import Sent, Tally, tally
from agentvisor.errors import AgentvisorError, InvalidInput

SETTLE_S = 12.0  # after the drain, before the idle CPU is measured: the screens settle


@dataclass(frozen=True)
class LoadOptions:
    sandboxes: int = 20
    messages: int = 2000
    rate: float = 0.0  # messages per second offered, all clients together; 0: as fast as can be
    clients: int = 8
    idle_s: float = 10.0  # how long the idle server's CPU is measured
    drain_timeout_s: float = 300.0
    image: str | None = None

    def check(self) -> None:
        if not 1 <= self.sandboxes <= 100:
            raise InvalidInput("--sandboxes must be between 1 and 100")
        if not 1 <= self.clients <= 64:
            raise InvalidInput("--clients must be between 1 and 64")
        if self.messages < 1:
            raise InvalidInput("--messages must be 1 or more")
        if self.messages / self.sandboxes > API_LIST_MAX - 10:
            raise InvalidInput(
                f"at most {API_LIST_MAX - 10} messages per sandbox can be witnessed; use fewer "
                "--messages or more --sandboxes"
            )
        if self.rate < 0 or self.idle_s < 0:
            raise InvalidInput("--rate and --idle-s must be 0 or more")


@dataclass
class LoadReport:
    options: LoadOptions
    tally: Tally
    send_s: float  # first request to last accepted
    deliver_s: float | None  # first accepted (created_at) to last delivered, store times
    drain_s: float | None  # end of sending to nothing pending; None: timed out
    cpu_run_pct: float  # of one core, from the first send to the drain
    cpu_idle_pct: float | None  # of one core, idle after the drain
    cpu_baseline_pct: float | None = None  # of one core, idle before any sandbox started

    @property
    def ok(self) -> bool:
        return self.tally.lost == 0 and self.tally.doubled == 0 and self.tally.wrong_pane == 0

    @property
    def accepted_per_s(self) -> float:
        return self.tally.sent / self.send_s if self.send_s > 0 else 0.0

    @property
    def delivered_per_s(self) -> float | None:
        if not self.deliver_s:
            return None
        return self.tally.delivered / self.deliver_s

    @property
    def cpu_idle_per_sandbox_pct(self) -> float | None:
        """What each sandbox adds to the idle server's CPU (over its baseline with none)."""
        if self.cpu_idle_pct is None:
            return None
        return max(0.0, self.cpu_idle_pct - (self.cpu_baseline_pct or 0.0)) / self.options.sandboxes

    def as_dict(self) -> dict[str, Any]:
        t = self.tally
        return {
            "ok": self.ok,
            "sandboxes": self.options.sandboxes,
            "messages": self.options.messages,
            "rate": self.options.rate,
            "clients": self.options.clients,
            "sent": t.sent,
            "delivered": t.delivered,
            "lost": t.lost,
            "undelivered": t.undelivered,
            "unwitnessed": t.unwitnessed,
            "doubled": t.doubled,
            "wrong_pane": t.wrong_pane,
            "accepted_per_s": round(self.accepted_per_s, 1),
            "delivered_per_s": _round(self.delivered_per_s, 1),
            "latency_s": {f"p{p}": _round(t.latency(p), 3) for p in (50, 90, 99)}
            | {"max": _round(max(t.latencies_s, default=None), 3)},
            "send_s": round(self.send_s, 2),
            "drain_s": _round(self.drain_s, 2),
            "server_cpu_pct": round(self.cpu_run_pct, 1),
            "server_idle_cpu_pct": _round(self.cpu_idle_pct, 3),
            "server_baseline_cpu_pct": _round(self.cpu_baseline_pct, 3),
            "server_idle_cpu_pct_per_sandbox": _round(self.cpu_idle_per_sandbox_pct, 4),
            "examples": t.examples,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class Senders:
    """C threads sharing one numbered sequence; message N is due at N / rate seconds (rate 0:
    at once) and goes to sandbox N mod count."""

    def __init__(self, fleet: Fleet, options: LoadOptions) -> None:
        self.fleet = fleet
        self.options = options
        self.sent: list[Sent] = []
        self.errors: list[AgentvisorError] = []
        self._next = 0
        self._lock = threading.Lock()

    def run(self) -> float:
        """Send everything; seconds from the first request to the last answer."""
        began = time.monotonic()
        threads = [
            threading.Thread(target=self._client, args=(began,), daemon=True)
            for _ in range(self.options.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.errors:
            raise self.errors[0]
        return time.monotonic() - began

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self.options.messages:
                return None
            self._next += 1
            return self._next - 1

    def _client(self, began: float) -> None:
        client = ApiClient(self.fleet.settings, timeout_s=60)
        roles = self.fleet.roles
        try:
            while (number := self._take()) is not None:
                if self.options.rate > 0:
                    time.sleep(max(0.0, began + number / self.options.rate - time.monotonic()))
                role = roles[number % len(roles)]
                row = client.post(
                    "/v1/messages",
                    {
                        "project": self.fleet.project,
                        "to": role,
                        "body": f"load message {number} for {role}",
                        "idempotency_key": f"{self.fleet.project}-{number}",
                    },
                )
                with self._lock:
                    self.sent.append(Sent(number, row["id"], row["marker"], role))
        except AgentvisorError as exc:
            with self._lock:
                self.errors.append(exc)
        finally:
            client.close()


def run_load(options: LoadOptions, image: str, progress: Progress) -> LoadReport:
    """One load drill on a throwaway team; everything it made is gone when it returns."""
    options.check()
    with Fleet("load", options.sandboxes, image, progress) as fleet:
        fleet.start(baseline_s=options.idle_s)
        offered = f"{options.rate:g}/s" if options.rate else "as fast as they can"
        progress(f"sending {options.messages} messages from {options.clients} clients, {offered}")
        senders = Senders(fleet, options)
        cpu_before, began = fleet.server.cpu_s(), time.monotonic()
        send_s = senders.run()
        sent_at = time.monotonic()
        try:
            wait_for(lambda: fleet.pending() == 0, options.drain_timeout_s, "the drain", 0.5)
            drain_s: float | None = time.monotonic() - sent_at
        except AgentvisorError:
            drain_s = None
        cpu_run = (fleet.server.cpu_s() - cpu_before) / (time.monotonic() - began) * 100
        cpu_idle = None
        if options.idle_s > 0 and drain_s is not None:
            progress(f"measuring the idle server for {options.idle_s:g} s")
            time.sleep(SETTLE_S)
            cpu_idle = fleet.server.cpu_percent_over(options.idle_s)
        progress("reading the witnesses: the store and every pane's history")
        rows = fleet.store_rows()
        result = tally(senders.sent, rows, fleet.panes())
        ours = [rows[s.message_id] for s in senders.sent if s.message_id in rows]
        delivered = [r.delivered_at for r in ours if r.delivered_at is not None]
        deliver_s = max(delivered) - min(r.created_at for r in ours) if delivered and ours else None
        return LoadReport(options, result, send_s, deliver_s, drain_s, cpu_run, cpu_idle,
                          fleet.baseline_cpu_pct)  # fmt: skip
