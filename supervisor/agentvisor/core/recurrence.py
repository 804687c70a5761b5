"""Check-in arithmetic: when a check-in fires, what it says, and when it fires next.

Pure functions, no clock and no I/O: the scheduler passes `now` in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A check-in fired later than this is announced as late in its text.
LATE_AFTER_S = 60.0
# A stored repeat shorter than this would fire on nearly every pass of the scheduler: such a
# row is set aside instead. (The API allows min_every_minutes, a minute by default; tests go
# down to 0.3 s.)
MIN_EVERY_S = 0.1


@dataclass(frozen=True)
class Firing:
    """What to do with one due check-in at time `now`."""

    lateness_s: float
    missed: int  # occurrences that were skipped because they fell in downtime
    next_due_at: float | None  # None when the check-in is done


def unfireable(due_at: object, every_s: object) -> str | None:
    """Why a stored check-in cannot fire (a row written by an older or buggy version, or by
    hand), or None when it can. Such a row is set aside; it never stops the others."""
    if not _finite(due_at):
        return f"its due_at ({due_at!r}) is not a finite number of epoch seconds"
    repeats = every_s is not None and every_s != 0  # 0 or None: fires once
    if repeats and not (_finite(every_s) and float(every_s) >= MIN_EVERY_S):  # type: ignore[arg-type]
        return (
            f"its repeat interval every_s ({every_s!r}) is not a finite number of at least "
            f"{MIN_EVERY_S:g} s"
        )
    return None


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def plan_firing(due_at: float, every_s: float | None, now: float) -> Firing:
    """A due check-in fires once, however many occurrences it missed, then keeps its cadence.

    The next occurrence is `due_at + k * every_s` for the smallest k that lies after `now`, so a
    recurring check-in never drifts by the time it took to fire.
    """
    lateness = max(0.0, now - due_at)
    if not every_s:
        return Firing(lateness_s=lateness, missed=0, next_due_at=None)
    steps = math.floor(lateness / every_s) + 1
    next_due = due_at + steps * every_s
    if next_due <= now:  # float rounding at exact multiples
        steps += 1
        next_due = due_at + steps * every_s
    return Firing(lateness_s=lateness, missed=steps - 1, next_due_at=next_due)


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {sec}s" if sec else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def checkin_text(note: str, firing: Firing) -> str:
    """The message an agent receives when its check-in fires."""
    text = f"Scheduled check-in: {note}"
    if firing.lateness_s >= LATE_AFTER_S:
        late = f"(late by {format_duration(firing.lateness_s)}"
        if firing.missed:
            late += (
                f"; {firing.missed} earlier occurrence{'s' if firing.missed > 1 else ''} skipped"
            )
        text += f"\n{late} because agentvisor was not running.)"
    return text
