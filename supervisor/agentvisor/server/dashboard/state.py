"""What the dashboard shows, from plain rows: each agent's derived state, its last activity, its
next check-in, and the JSON snapshot the page renders. Pure: no I/O, time comes in as `now`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentvisor.core.delivery import PENDING_STATES
from agentvisor.core.sandbox_status import SandboxInfo, SandboxStats, health_of

Row = dict[str, Any]
PREVIEW_CHARS = 240
NOTE_PREVIEW_CHARS = 160


@dataclass(frozen=True)
class SandboxView:
    """What Docker said about a project's sandboxes, sampled at `sampled_at` (epoch seconds)."""

    infos: Mapping[str, SandboxInfo] = field(default_factory=dict)  # by role
    stats: Mapping[str, SandboxStats] = field(default_factory=dict)  # by role
    error: str | None = None  # Docker unreachable, or the last sample failed
    sampled_at: float | None = None


@dataclass(frozen=True)
class ProjectRows:
    """Everything read from the store for one project, as plain rows."""

    project: Row
    agents: list[Row]
    messages: list[Row]  # newest first
    checkins: list[Row]  # pending first (by due time), then recent others
    events: list[Row]  # newest first, data already decoded
    activity: Mapping[int, float]  # agent id -> latest sign of activity (events, messages)
    pending: Mapping[int, Mapping[str, int]]  # agent id -> {"queued": n, "leased": n}
    checkin_messages: Mapping[int, Row]  # check-in id -> its latest message (state, times)
    egress: list[Row] = field(default_factory=list)  # egress.request events, newest first


def agent_state(
    agent: Mapping[str, Any],
    now: float,
    heartbeat_timeout_s: float,
    sandbox: SandboxInfo | None = None,
) -> str:
    """paused, stopped, starting, unhealthy, or what the agent last reported (working, idle...).

    Paused wins (a usage limit holds deliveries whatever the shim says); a sandbox Docker reports
    as not running is stopped; otherwise the heartbeat decides between the reported state and
    starting / unhealthy.
    """
    paused_until = agent.get("paused_until")
    if paused_until and paused_until > now:
        return "paused"
    if sandbox is not None and sandbox.status not in ("running", "restarting"):
        return "stopped"
    started_at = sandbox.started_at if sandbox is not None else None
    health = health_of(agent, now, heartbeat_timeout_s, started_at)
    if health != "healthy":
        return health
    reported = agent.get("state")
    return str(reported) if reported and reported != "registered" else "idle"


def preview(text: str | None, limit: int = PREVIEW_CHARS) -> str:
    """The start of a long text on one screen line, marked when cut."""
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def last_activity(agent: Mapping[str, Any], activity: Mapping[int, float]) -> float | None:
    """The latest of the agent's own activity (events, messages sent or delivered) and the last
    time its pane was seen changing; heartbeats alone are not activity."""
    times = [t for t in (activity.get(agent["id"]), agent.get("pane_changed_at")) if t]
    return max(times) if times else None


def next_checkins(checkins: Iterable[Row]) -> dict[int, float]:
    """recipient id -> earliest due time of its pending check-ins."""
    due: dict[int, float] = {}
    for checkin in checkins:
        if checkin["state"] == "pending":
            rid = checkin["recipient_id"]
            due[rid] = min(due.get(rid, checkin["due_at"]), checkin["due_at"])
    return due


def project_summary(
    project: Row, agents: int, messages_by_state: Mapping[str, int], checkins_pending: int
) -> Row:
    return {
        "name": project["name"],
        "state": project["state"],
        "path": project["path"],
        "agents": agents,
        "messages": dict(messages_by_state),
        "pending": sum(messages_by_state.get(s, 0) for s in PENDING_STATES),
        "failed": messages_by_state.get("failed", 0),
        "checkins_pending": checkins_pending,
    }


def snapshot(
    rows: ProjectRows,
    sandboxes: SandboxView,
    now: float,
    heartbeat_timeout_s: float,
) -> Row:
    """The selected project's part of `GET /v1/dashboard/state`."""
    roles = {a["id"]: a["role"] for a in rows.agents}
    due = next_checkins(rows.checkins)
    agents = []
    for agent in rows.agents:
        info = sandboxes.infos.get(agent["role"])
        stats = sandboxes.stats.get(agent["role"])
        pending = rows.pending.get(agent["id"], {})
        agents.append(
            {
                "id": agent["id"],
                "role": agent["role"],
                "profile": agent["profile"],
                "state": agent_state(agent, now, heartbeat_timeout_s, info),
                "reported_state": agent["state"],
                "last_seen_at": agent["last_seen_at"],
                "last_activity_at": last_activity(agent, rows.activity),
                "next_checkin_at": due.get(agent["id"]),
                "paused_until": agent["paused_until"],
                "queued": pending.get("queued", 0),
                "leased": pending.get("leased", 0),
                "sandbox": info.status if info else None,
                "container": info.name if info else agent.get("container"),
                "restarts": info.restart_count if info else None,
                "cpu_percent": stats.cpu_percent if stats else None,
                "memory_mb": stats.memory_mb if stats else None,
                "memory_limit_mb": stats.memory_limit_mb if stats else None,
            }
        )
    messages = [
        {
            "id": m["id"],
            "sender": m["sender"],
            "recipient": roles.get(m["recipient_id"], str(m["recipient_id"])),
            "kind": m["kind"],
            "state": m["state"],
            "attempts": m["attempts"],
            "created_at": m["created_at"],
            "delivered_at": m["delivered_at"],
            "marker": m["marker"],
            "last_error": m.get("last_error"),
            "checkin_id": m.get("checkin_id"),
            "preview": preview(m["body"]),
            "size": len(m["body"] or ""),
        }
        for m in rows.messages
    ]
    checkins = []
    for c in rows.checkins:
        fired = rows.checkin_messages.get(c["id"])
        checkins.append(
            {
                "id": c["id"],
                "creator": c["creator"],
                "recipient": roles.get(c["recipient_id"], str(c["recipient_id"])),
                "state": c["state"],
                "due_at": c["due_at"],
                "every_s": c["every_s"],
                "fired_count": c["fired_count"] or 0,
                "last_fired_at": c["last_fired_at"],
                "message_id": fired["id"] if fired else None,
                "message_state": fired["state"] if fired else None,
                "note": preview(c["note"], NOTE_PREVIEW_CHARS),
            }
        )
    return {
        "project": {
            "name": rows.project["name"],
            "state": rows.project["state"],
            "path": rows.project["path"],
            "start_branch": rows.project.get("start_branch"),
        },
        "agents": agents,
        "messages": messages,
        "checkins": checkins,
        "events": event_rows(rows.events, roles),
        "egress": egress_rows(rows.egress),
    }


def egress_rows(events: Iterable[Row]) -> list[Row]:
    """What the agents asked the egress proxy for: one row per request (agent strings raw;
    the page puts them in as text)."""
    rows = []
    for e in events:
        data = e["data"] if isinstance(e["data"], Mapping) else {}
        rows.append(
            {
                "id": e["id"],
                "at": e["at"],
                "role": data.get("role"),
                "method": preview(str(data.get("method") or ""), 16),
                "host": preview(str(data.get("host") or ""), 120),
                "port": data.get("port"),
                "allowed": bool(data.get("allowed")),
                "reason": preview(str(data.get("reason") or ""), 40),
                "bytes_up": data.get("bytes_up") or 0,
                "bytes_down": data.get("bytes_down") or 0,
            }
        )
    return rows


def event_rows(events: Iterable[Row], roles: Mapping[int, str]) -> list[Row]:
    """Events for the timeline: with the agent's role and a one-line summary of the data."""
    return [
        {
            "id": e["id"],
            "at": e["at"],
            "kind": e["kind"],
            "role": roles.get(e["agent_id"]) if e["agent_id"] else None,
            "data": e["data"],
            "summary": event_summary(e["data"]),
        }
        for e in events
    ]


def event_summary(data: Any, limit: int = 160) -> str:
    """An event's data on one line: `key=value` pairs, long values cut."""
    if not isinstance(data, Mapping):
        return preview(json.dumps(data, ensure_ascii=False), limit) if data else ""
    parts = []
    for key, value in data.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={preview(text, 80)}")
    return preview(" ".join(parts), limit)
