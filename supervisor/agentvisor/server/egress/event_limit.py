"""How many egress events one agent may write: at most `per_window` `egress.request` events per
agent in each `window_s`; the requests past that are summed up and written as one summary event
when the window ends, so that a flood of requests cannot fill the database (the Prometheus
counters still count every request). Pure: the proxy passes the time in."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SUMMARY_REASON = "events-suppressed"
TOP_HOSTS = 10


@dataclass
class _Window:
    started: float
    project_id: int | None
    role: str | None
    written: int = 0
    suppressed: int = 0
    denied: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    hosts: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Summary:
    """The summary event of one agent's window: its project, agent and data."""

    project_id: int | None
    agent_id: int
    data: dict[str, Any]


@dataclass
class EventLimit:
    per_window: int  # 0: no limit
    window_s: float = 60.0
    _windows: dict[int, _Window] = field(default_factory=dict)

    def admit(self, agent_id: int | None, project_id: int | None, data: dict[str, Any],
              now: float) -> bool:  # fmt: skip
        """Whether this request's event is written; when not, it is counted for the summary.
        Requests of no agent (no or a wrong token) are limited together, as agent 0."""
        if self.per_window <= 0:
            return True
        key = agent_id or 0
        window = self._windows.get(key)
        if window is None or now - window.started >= self.window_s:
            # (The caller took an ended window's summary with `due` before.)
            window = self._windows[key] = _Window(now, project_id, data.get("role"))
        if window.written < self.per_window:
            window.written += 1
            return True
        window.suppressed += 1
        window.denied += 0 if data.get("allowed") else 1
        window.bytes_up += int(data.get("bytes_up") or 0)
        window.bytes_down += int(data.get("bytes_down") or 0)
        window.hosts[str(data.get("host") or "?")[:200]] += 1
        return False

    def due(self, now: float, everything: bool = False) -> list[Summary]:
        """The summaries of the windows that have ended (`everything`: of all windows) with
        requests suppressed; those windows are forgotten (as are ended windows with nothing
        suppressed)."""
        out: list[Summary] = []
        for key, window in list(self._windows.items()):
            if now - window.started < self.window_s and not everything:
                continue
            del self._windows[key]
            if window.suppressed:
                out.append(Summary(window.project_id, key, self._summary(window, now)))
        return out

    def next_due(self) -> float | None:
        """When the first window with requests suppressed ends, None when there is none."""
        ends = [w.started + self.window_s for w in self._windows.values() if w.suppressed]
        return min(ends) if ends else None

    def _summary(self, window: _Window, now: float) -> dict[str, Any]:
        top = window.hosts.most_common(TOP_HOSTS)
        named = ", ".join(f"{host} x{count}" for host, count in top)
        return {
            "role": window.role,
            "method": "(summary)",
            "host": f"{window.suppressed} more requests: {named}",
            "port": None,
            # Under `--denied` when any of them was denied.
            "allowed": window.denied == 0,
            "reason": SUMMARY_REASON,
            "suppressed": window.suppressed,
            "denied": window.denied,
            "hosts": dict(top),
            "bytes_up": window.bytes_up,
            "bytes_down": window.bytes_down,
            "since": window.started,
            "until": now,
            "limit": f"{self.per_window} events per {self.window_s:g} s (egress_events_per_minute)",
        }
