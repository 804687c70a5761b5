"""What a sandbox is doing, as the operator sees it: Docker's state read into plain values, and
the shim's heartbeat turned into healthy / starting / unhealthy. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class SandboxInfo:
    project: str
    role: str
    name: str
    container_id: str
    status: str  # Docker's: created, running, restarting, paused, exited, dead
    health: str | None  # Docker's healthcheck, if the image has one; see health_of for the shim's
    started_at: float | None
    restart_count: int
    image: str
    exit_code: int | None
    restart_policy: str


@dataclass(frozen=True)
class SandboxStats:
    cpu_percent: float | None
    memory_mb: float | None
    memory_limit_mb: float | None


def health_of(
    agent_row: Mapping[str, Any], now: float, timeout_s: float, started_at: float | None = None
) -> str:
    """ "healthy" when the shim's last heartbeat is recent, "starting" while a fresh sandbox has
    not sent one yet (for up to `timeout_s` after `started_at`), "unhealthy" otherwise."""
    last = agent_row.get("last_seen_at")
    if last is not None and now - last <= timeout_s:
        return "healthy"
    if started_at is not None:
        fresh = last is None or last < started_at
        return "starting" if fresh and now - started_at <= timeout_s else "unhealthy"
    return "starting" if last is None else "unhealthy"


def parse_docker_time(text: str | None) -> float | None:
    """Epoch seconds from Docker's RFC 3339 times (nanoseconds: Python 3.11's `fromisoformat`
    reads them, keeping microseconds); None for its zero time or a text that is not a time."""
    if not text or text.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def cpu_percent(stats: Mapping[str, Any]) -> float | None:
    """CPU use as `docker stats` shows it (100 = one CPU) from a `stream=False` sample."""
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    try:
        cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system_delta = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
    except (KeyError, TypeError):
        return None
    online = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or ()) or 1
    if system_delta <= 0 or cpu_delta < 0:
        return 0.0
    return cpu_delta / system_delta * online * 100.0


def memory_mb(stats: Mapping[str, Any]) -> float | None:
    """Memory in use without the page cache that can be dropped, as `docker stats` counts it."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if usage is None:
        return None
    details = memory.get("stats") or {}
    inactive = details.get("total_inactive_file", details.get("inactive_file", 0))
    if inactive < usage:
        usage -= inactive
    return usage / 2**20
