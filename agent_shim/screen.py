"""Reading an agent's screen: ready or busy, the text still waiting in the input box, a
usage-limit notice and when it resets.

Pure functions over captured lines; the clock comes in as a parameter.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent_shim.profiles import Profile

USAGE_TAIL_LINES = 15  # a usage-limit notice sits above the input box and its status lines


def nonempty_tail(lines: Sequence[str], count: int) -> list[str]:
    """The last `count` lines that are not blank, stripped of trailing blanks."""
    kept = [line.rstrip() for line in lines if line.strip()]
    return kept[-count:] if count > 0 else []


def is_ready(profile: Profile, lines: Sequence[str]) -> bool:
    """Whether the agent waits for input: the ready pattern matches near the bottom of the
    screen and nothing there says it is working."""
    tail = "\n".join(nonempty_tail(lines, profile.tail_lines))
    if not re.search(profile.ready_pattern, tail, re.MULTILINE):
        return False
    return not (profile.busy_pattern and re.search(profile.busy_pattern, tail, re.MULTILINE))


_MARKER_IN_INPUT = re.compile(r"\[(av-[0-9a-z]+)\]")


def pending_marker(profile: Profile, lines: Sequence[str]) -> str | None:
    """The marker of a message typed into the input box but not submitted (the shim died
    between typing and the submit key), if the last prompt line near the bottom has one."""
    prompt_lines = [
        line
        for line in nonempty_tail(lines, profile.tail_lines)
        if re.search(profile.input_pattern, line)
    ]
    found = _MARKER_IN_INPUT.search(prompt_lines[-1]) if prompt_lines else None
    return found.group(1) if found else None


_TYPED_HEADER = re.compile(r"\[av-[0-9a-z]+\] from ")


def find_usage_limit(
    profile: Profile, lines: Sequence[str], typed: Sequence[str] = ()
) -> str | None:
    """The agent CLI's own usage-limit notice near the bottom of the screen, if there is one.
    What the shim typed is not the CLI's notice, even where it quotes one (a teammate's
    report): a message's header line, and the lines of its body below it (known from `typed`,
    the bodies typed lately), are passed over."""
    if not profile.usage_limit_pattern:
        return None
    tail = nonempty_tail(lines, USAGE_TAIL_LINES)
    typed_lines: set[int] = set()
    for index, line in enumerate(tail):
        header = _TYPED_HEADER.search(line)
        if header is None:
            continue
        typed_lines.add(index)
        rest = line[header.end() :]
        body = next((b for b in typed if b.split("\n", 1)[0].strip() in rest), None)
        if body is not None:  # its other lines, as nonempty_tail counts them
            more = sum(1 for rest_line in body.split("\n")[1:] if rest_line.strip())
            typed_lines.update(range(index + 1, index + 1 + more))
    for index in reversed(range(len(tail))):
        if index not in typed_lines and re.search(profile.usage_limit_pattern, tail[index]):
            return tail[index].strip()
    return None


_EPOCH = re.compile(r"limit reached\|(\d{9,11})\b", re.IGNORECASE)
_RESET = re.compile(
    r"\breset(?:s)?\s+(?:at\s+)?"
    r"(?:(?P<month>[A-Za-z]{3,9})\s+(?P<day>\d{1,2}),?\s+(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)?"
    r"(?:\s*\((?P<zone>[A-Za-z_]+(?:/[A-Za-z0-9_+-]+)*)\))?",
    re.IGNORECASE,
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}


def parse_reset_at(text: str, now: datetime) -> datetime | None:
    """When the usage limit in `text` resets, as an aware datetime after `now` (aware too;
    its zone is used when the text names none). None when the text gives no usable time."""
    epoch = _EPOCH.search(text)
    if epoch:
        return datetime.fromtimestamp(int(epoch.group(1)), UTC)
    found = _RESET.search(text)
    if not found or (found["ampm"] is None and found["minute"] is None):
        return None
    hour, minute = int(found["hour"]), int(found["minute"] or 0)
    if found["ampm"]:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if found["ampm"].lower().startswith("p") else 0)
    if hour > 23 or minute > 59:
        return None
    zone = now.tzinfo
    if found["zone"]:
        try:
            zone = ZoneInfo(found["zone"])
        except (ZoneInfoNotFoundError, ValueError):
            zone = now.tzinfo
    local_now = now.astimezone(zone)
    reset = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if found["month"]:
        month = _MONTHS.get(found["month"][:3].lower())
        if month is None:
            return None
        try:
            reset = reset.replace(month=month, day=int(found["day"]))
            if reset < local_now - timedelta(days=1):
                reset = reset.replace(year=reset.year + 1)
        except ValueError:
            return None
    elif reset <= local_now:
        reset += timedelta(days=1)
    return reset


UNDATED_RESET_MAX = timedelta(hours=5, minutes=30)  # undated resets are the 5-hour window's


class UsageLimitGate:
    """Holds deliveries while a usage-limit notice is on screen, until the time it names
    (plus `margin`), or for `default_pause` when it names none. A notice waited out is not
    obeyed again while the screen around it stays the same; an undated reset more than
    5.5 hours away is a stale notice from an earlier window and is not obeyed at all."""

    def __init__(
        self,
        profile: Profile,
        default_pause: timedelta = timedelta(hours=1),
        margin: timedelta = timedelta(minutes=1),
    ) -> None:
        self.profile = profile
        self.default_pause = default_pause
        self.margin = margin
        self.notice: str | None = None
        self.reset_at: datetime | None = None  # the time the notice names, if readable
        self.paused_until: datetime | None = None
        self._screen_key: str | None = None
        self._waited_key: str | None = None

    def observe(self, lines: Sequence[str], now: datetime, typed: Sequence[str] = ()) -> bool:
        """Whether deliveries must wait, given the screen `lines` at `now` (aware) and the
        bodies the shim typed lately (`typed`: never the CLI's own notice)."""
        notice = find_usage_limit(self.profile, lines, typed)
        if notice is None:
            self.notice = self.reset_at = self.paused_until = None
            self._screen_key = self._waited_key = None
            return False
        key = hashlib.sha256("\n".join(nonempty_tail(lines, USAGE_TAIL_LINES)).encode()).hexdigest()
        if key == self._waited_key:
            return False
        if key != self._screen_key:
            self._screen_key, self.notice = key, notice
            self.paused_until = self._pause_end(notice, now)
        if self.paused_until is None or now >= self.paused_until:
            self._waited_key, self.paused_until = key, None
            return False
        return True

    def _pause_end(self, notice: str, now: datetime) -> datetime | None:
        reset = self.reset_at = parse_reset_at(notice, now)
        if reset is None:
            return now + self.default_pause
        dated = _RESET.search(notice)
        undated = not _EPOCH.search(notice) and not (dated and dated["month"])
        if undated and reset - now > UNDATED_RESET_MAX:
            return None
        return reset + self.margin
