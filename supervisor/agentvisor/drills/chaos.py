"""`agentvisor chaos`: a numbered stream of messages into a throwaway demo team while the server,
shims, containers and agent CLIs are killed at random moments; then the drain, and the verdict
of both witnesses (the store's states, the pane histories) on every message."""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentvisor.client import ApiClient
from agentvisor.drills.fleet import API_LIST_MAX, Fleet, Progress, wait_for
from agentvisor.drills.tally import KILL_KINDS, PlannedKill, Sent, Tally, plan_kills, tally
from agentvisor.errors import AgentvisorError, InvalidInput, ServerUnavailable

MEAN_GAP_S = 8.0  # between kills, when only --duration is given
FIRST_KILL_S = 3.0


@dataclass(frozen=True)
class ChaosOptions:
    duration_s: float | None = None  # default 120 s, or as long as `kills` need
    kills: int | None = None
    seed: int | None = None
    sandboxes: int = 3
    rate: float = 4.0  # messages per second offered
    kinds: tuple[str, ...] = KILL_KINDS
    drain_timeout_s: float = 180.0
    image: str | None = None

    def check(self) -> None:
        if self.sandboxes < 1 or self.sandboxes > 50:
            raise InvalidInput("--sandboxes must be between 1 and 50")
        if not self.rate > 0:
            raise InvalidInput("--rate must be more than 0 messages per second")
        if self.duration_s is not None and not self.duration_s > 0:
            raise InvalidInput("--duration must be more than 0 seconds")
        if self.kills is not None and self.kills < 0:
            raise InvalidInput("--kills must be 0 or more")
        span_s = self.duration_s or (
            FIRST_KILL_S + self.kills * MEAN_GAP_S + 3 if self.kills is not None else 120.0
        )
        if span_s * self.rate / self.sandboxes > API_LIST_MAX * 0.8:
            raise InvalidInput(
                f"{span_s * self.rate / self.sandboxes:.0f} messages per sandbox are more than "
                f"the drill can witness ({API_LIST_MAX * 0.8:.0f}); lower --rate or --duration, "
                "or add --sandboxes"
            )
        unknown = sorted(set(self.kinds) - set(KILL_KINDS))
        if unknown or not self.kinds:
            raise InvalidInput(
                f"unknown kill kind(s) {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(KILL_KINDS)}"
            )


@dataclass
class ChaosReport:
    seed: int
    sandboxes: int
    duration_s: float  # of the stream and the kills
    drain_s: float | None  # from the end of the stream to nothing pending; None: timed out
    tally: Tally
    kills: dict[str, int] = field(default_factory=dict)
    kill_log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.tally.ok and self.drain_s is not None

    def as_dict(self) -> dict[str, Any]:
        t = self.tally
        return {
            "ok": self.ok,
            "seed": self.seed,
            "sandboxes": self.sandboxes,
            "duration_s": round(self.duration_s, 1),
            "sent": t.sent,
            "delivered": t.delivered,
            "exactly_once": t.exactly_once,
            "lost": t.lost,
            "undelivered": t.undelivered,
            "unwitnessed": t.unwitnessed,
            "doubled": t.doubled,
            "wrong_pane": t.wrong_pane,
            "latency_s": {f"p{p}": _round(t.latency(p)) for p in (50, 90, 99)}
            | {"max": _round(max(t.latencies_s, default=None))},
            "drain_s": _round(self.drain_s),
            "kills": dict(self.kills),
            "kill_log": self.kill_log,
            "examples": t.examples,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class Stream:
    """The numbered stream: message N to a role chosen by the seed, at `rate` a second, each
    sent until the API accepts it, with the same idempotency key on every try (a retry after
    the server was killed mid-request never makes a second message)."""

    def __init__(self, fleet: Fleet, rate: float, seed: int) -> None:
        self.fleet = fleet
        self.rate = rate
        self.rng = random.Random(seed + 1)
        self.sent: list[Sent] = []
        self.error: AgentvisorError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        client = ApiClient(self.fleet.settings, timeout_s=10)
        began = time.monotonic()
        number = 0
        try:
            while not self._stop.is_set():
                due = began + number / self.rate
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                role = self.rng.choice(self.fleet.roles)
                self.sent.append(self._send(client, number, role))
                number += 1
        except AgentvisorError as exc:
            self.error = exc
        finally:
            client.close()

    def _send(self, client: ApiClient, number: int, role: str) -> Sent:
        body = {
            "project": self.fleet.project,
            "to": role,
            "body": f"drill message {number} for {role}",
            "idempotency_key": f"{self.fleet.project}-{number}",
        }
        deadline = time.monotonic() + 120
        while True:
            try:
                row = client.post("/v1/messages", body)
                return Sent(number, row["id"], row["marker"], role)
            except ServerUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # the server is down (killed); it is coming back


def run_chaos(options: ChaosOptions, image: str, progress: Progress) -> ChaosReport:
    """One chaos drill on a throwaway team; everything it made is gone when it returns."""
    options.check()
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    with Fleet("chaos", options.sandboxes, image, progress) as fleet:
        plan, duration_s = _plan(options, seed, fleet.roles)
        fleet.start()
        progress(
            f"seed {seed}: {len(plan)} kills over {duration_s:.0f} s, "
            f"{options.rate:g} messages/s to {options.sandboxes} sandboxes"
        )
        stream = Stream(fleet, options.rate, seed)
        kills: dict[str, int] = dict.fromkeys(options.kinds, 0)
        kill_log: list[dict[str, Any]] = []
        began = time.monotonic()
        stream.start()
        try:
            for kill in plan:
                time.sleep(max(0.0, began + kill.at_s - time.monotonic()))
                _kill(fleet, kill)
                kills[kill.kind] += 1
                kill_log.append(
                    {"at_s": round(time.monotonic() - began, 2), "kind": kill.kind,
                     "role": kill.role}
                )  # fmt: skip
                progress(f"{time.monotonic() - began:6.1f} s  killed {_what(kill)}")
            time.sleep(max(0.0, began + duration_s - time.monotonic()))
        finally:
            stream.stop()
        if stream.error is not None:
            raise stream.error
        ended = time.monotonic()
        progress(f"{len(stream.sent)} messages sent; waiting for the drain")
        drain_s = _drain(fleet, options.drain_timeout_s, ended)
        progress("reading the witnesses: the store and every pane's history")
        result = tally(stream.sent, fleet.store_rows(), fleet.panes())
        return ChaosReport(seed, options.sandboxes, ended - began, drain_s, result, kills, kill_log)


def _plan(
    options: ChaosOptions, seed: int, roles: Sequence[str]
) -> tuple[list[PlannedKill], float]:
    if options.kills is not None and options.duration_s is None:
        span = FIRST_KILL_S + options.kills * MEAN_GAP_S
        plan = plan_kills(seed, roles, duration_s=span, kills=options.kills, kinds=options.kinds,
                          first_s=FIRST_KILL_S)  # fmt: skip
        return plan, max((k.at_s for k in plan), default=0.0) + 3.0
    duration_s = options.duration_s or 120.0
    plan = plan_kills(seed, roles, duration_s=max(duration_s - 3.0, FIRST_KILL_S),
                      kills=options.kills, kinds=options.kinds, mean_gap_s=MEAN_GAP_S,
                      first_s=FIRST_KILL_S)  # fmt: skip
    return plan, duration_s


def _kill(fleet: Fleet, kill: PlannedKill) -> None:
    if kill.kind == "server":
        fleet.kill_server()
        return
    assert kill.role is not None
    if kill.kind == "shim":
        fleet.kill_shim(kill.role)
    elif kill.kind == "container":
        fleet.kill_container(kill.role)
    else:
        fleet.kill_cli(kill.role)


def _what(kill: PlannedKill) -> str:
    return {
        "server": "the server (kill -9, started again)",
        "shim": f"the shim of {kill.role} (kill -9; supervisord restarts it)",
        "container": f"the sandbox of {kill.role} (docker kill; the watchdog restarts it)",
        "cli": f"the agent CLI of {kill.role} (kill -9; the shim restarts it)",
    }[kill.kind]


def _drain(fleet: Fleet, timeout_s: float, since: float) -> float | None:
    """Seconds from `since` until nothing is queued or leased and every sandbox runs; None
    when that did not happen within `timeout_s`."""
    deadline = since + timeout_s
    try:
        fleet.wait_running(timeout_s=max(1.0, deadline - time.monotonic()))
        wait_for(lambda: fleet.pending() == 0, max(1.0, deadline - time.monotonic()),
                 "the drain", 0.5)  # fmt: skip
    except AgentvisorError:
        return None
    return time.monotonic() - since
