"""The pure arithmetic of the drills: the kill schedule a seed gives, percentiles, CPU time from
`/proc`, and the tally of what happened to each message from its two witnesses (its state in the
store, and its marker in the agents' pane histories). No I/O, no clock."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

KILL_KINDS = ("server", "shim", "container", "cli")
EXAMPLES = 10  # message numbers kept per kind of failure, to look at


@dataclass(frozen=True)
class PlannedKill:
    at_s: float  # seconds after the stream started
    kind: str  # one of KILL_KINDS
    role: str | None  # the sandbox it hits; None for the server


def plan_kills(
    seed: int,
    roles: Sequence[str],
    *,
    duration_s: float,
    kills: int | None = None,
    kinds: Sequence[str] = KILL_KINDS,
    mean_gap_s: float = 8.0,
    first_s: float = 3.0,
) -> list[PlannedKill]:
    """The kills of a run: `kills` of them (default one per `mean_gap_s` of `duration_s`) at
    random moments between `first_s` and `duration_s`, their kinds in shuffled rounds so that
    every kind comes once before any comes twice; each hits a random sandbox. Same seed, same
    plan."""
    unknown = sorted(set(kinds) - set(KILL_KINDS))
    if unknown or not kinds:
        raise ValueError(f"unknown kill kind(s) {unknown}; known: {', '.join(KILL_KINDS)}")
    if not roles:
        raise ValueError("no sandbox to kill in")
    rng = random.Random(seed)
    end_s = max(duration_s, first_s)
    count = kills if kills is not None else max(1, int((end_s - first_s) / mean_gap_s))
    times = sorted(rng.uniform(first_s, end_s) for _ in range(count))
    order: list[str] = []
    while len(order) < count:
        round_ = list(kinds)
        rng.shuffle(round_)
        order += round_
    return [
        PlannedKill(round(at, 3), kind, None if kind == "server" else rng.choice(list(roles)))
        for at, kind in zip(times, order, strict=False)
    ]


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank `p`th percentile (0 < p <= 100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def cpu_seconds(proc_stat: str, clock_ticks: int) -> float:
    """User plus system CPU seconds of a process from the text of its `/proc/PID/stat`."""
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = proc_stat[proc_stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / clock_ticks


@dataclass(frozen=True)
class Sent:
    """One message of the numbered stream, as the API accepted it."""

    number: int
    message_id: int
    marker: str
    recipient: str


@dataclass(frozen=True)
class StoreRow:
    """What the store says of a message: its state and its timestamps (epoch seconds)."""

    state: str
    created_at: float
    delivered_at: float | None


@dataclass
class Tally:
    sent: int = 0
    delivered: int = 0  # delivered in the store and typed in its recipient's pane
    exactly_once: int = 0  # delivered, once in its recipient's pane, in no other
    lost: int = 0  # not delivered in the store, or delivered but in no pane of its recipient
    undelivered: int = 0  # of the lost: the store never said delivered
    unwitnessed: int = 0  # of the lost: delivered in the store, but not in the pane history
    doubled: int = 0  # more than once in its recipient's pane
    wrong_pane: int = 0  # in the pane of an agent it was not for
    latencies_s: list[float] = field(default_factory=list)  # accepted -> delivered, store times
    examples: dict[str, list[int]] = field(default_factory=dict)  # failure -> message numbers

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.doubled == 0 and self.wrong_pane == 0

    def latency(self, p: float) -> float | None:
        return percentile(self.latencies_s, p)

    def _example(self, what: str, number: int) -> None:
        kept = self.examples.setdefault(what, [])
        if len(kept) < EXAMPLES:
            kept.append(number)


def marker_counts(marker: str, texts: Sequence[str]) -> int:
    """How often the shim typed `marker` in these captures of one pane: it types `[MARKER]`
    as the head of the message (the agent's reply quotes it without brackets)."""
    token = f"[{marker}]"
    return sum(text.count(token) for text in texts)


def tally(
    sent: Sequence[Sent],
    store: Mapping[int, StoreRow],
    panes: Mapping[str, Sequence[str]],
) -> Tally:
    """Judge every message of the stream from both witnesses. `store` maps a message id to
    its row (missing: the store lost it); `panes` maps each role to the captures of its pane
    history, one per life of its tmux server (a container killed and started again begins a
    new history), so a marker is counted across all of them."""
    result = Tally(sent=len(sent))
    for message in sent:
        row = store.get(message.message_id)
        own = marker_counts(message.marker, panes.get(message.recipient, ()))
        others = sum(
            marker_counts(message.marker, texts)
            for role, texts in panes.items()
            if role != message.recipient
        )
        in_store = row is not None and row.state == "delivered"
        if in_store and own >= 1:
            result.delivered += 1
            if row is not None and row.delivered_at is not None:
                result.latencies_s.append(row.delivered_at - row.created_at)
        else:
            result.lost += 1
            if not in_store:
                result.undelivered += 1
                result._example("undelivered", message.number)
            else:
                result.unwitnessed += 1
                result._example("unwitnessed", message.number)
        if own > 1:
            result.doubled += 1
            result._example("doubled", message.number)
        if others:
            result.wrong_pane += 1
            result._example("wrong_pane", message.number)
        if in_store and own == 1 and not others:
            result.exactly_once += 1
    return result
