"""The dashboard's pure parts: an agent's derived state, last activity, next check-in, the
snapshot's shape, and who counts as a loopback reader."""

from __future__ import annotations

from typing import Any

import pytest

from agentvisor.core.sandbox_status import SandboxInfo, SandboxStats
from agentvisor.server.dashboard.routes import is_loopback_request
from agentvisor.server.dashboard.state import (
    ProjectRows,
    SandboxView,
    agent_state,
    egress_rows,
    event_summary,
    last_activity,
    next_checkins,
    preview,
    snapshot,
)

NOW = 1_800_000_000.0
TIMEOUT_S = 30.0


def agent(**fields: Any) -> dict[str, Any]:
    row = {
        "id": 1,
        "role": "developer",
        "profile": "demo",
        "state": "working",
        "last_seen_at": NOW - 5,
        "paused_until": None,
        "pane_changed_at": None,
        "container": None,
    }
    return {**row, **fields}


def sandbox(status: str = "running", started_at: float | None = NOW - 600) -> SandboxInfo:
    return SandboxInfo(
        project="demo",
        role="developer",
        name="agentvisor-demo-developer",
        container_id="c1",
        status=status,
        health=None,
        started_at=started_at,
        restart_count=0,
        image="agentvisor/sandbox:test",
        exit_code=None,
        restart_policy="unless-stopped",
    )


def test_a_fresh_heartbeat_shows_the_state_the_agent_reported():
    assert agent_state(agent(state="working"), NOW, TIMEOUT_S) == "working"
    assert agent_state(agent(state="idle"), NOW, TIMEOUT_S, sandbox()) == "idle"


def test_a_registered_agent_with_a_heartbeat_but_no_state_is_idle():
    assert agent_state(agent(state="registered"), NOW, TIMEOUT_S) == "idle"


def test_paused_wins_over_a_fresh_heartbeat_until_the_pause_ends():
    paused = agent(paused_until=NOW + 60)
    assert agent_state(paused, NOW, TIMEOUT_S, sandbox()) == "paused"
    assert agent_state(paused, NOW + 61, TIMEOUT_S) == "unhealthy"  # no heartbeat since


def test_a_heartbeat_older_than_the_timeout_is_unhealthy():
    assert agent_state(agent(last_seen_at=NOW - 31), NOW, TIMEOUT_S, sandbox()) == "unhealthy"


def test_a_new_sandbox_without_a_heartbeat_yet_is_starting_then_unhealthy():
    fresh = sandbox(started_at=NOW - 5)
    assert agent_state(agent(last_seen_at=None), NOW, TIMEOUT_S, fresh) == "starting"
    assert agent_state(agent(last_seen_at=None), NOW + 60, TIMEOUT_S, fresh) == "unhealthy"


def test_a_sandbox_docker_reports_exited_is_stopped_whatever_the_last_heartbeat():
    assert agent_state(agent(), NOW, TIMEOUT_S, sandbox("exited")) == "stopped"


def test_last_activity_is_the_latest_of_activity_and_pane_change_not_the_heartbeat():
    assert last_activity(agent(), {}) is None
    assert last_activity(agent(pane_changed_at=NOW - 100), {1: NOW - 50}) == NOW - 50
    assert last_activity(agent(pane_changed_at=NOW - 10), {1: NOW - 50}) == NOW - 10


def test_next_checkin_is_the_earliest_pending_one_per_recipient():
    rows = [
        {"recipient_id": 1, "state": "pending", "due_at": NOW + 300},
        {"recipient_id": 1, "state": "pending", "due_at": NOW + 60},
        {"recipient_id": 1, "state": "fired", "due_at": NOW + 10},
        {"recipient_id": 2, "state": "cancelled", "due_at": NOW + 10},
    ]
    assert next_checkins(rows) == {1: NOW + 60}


def test_long_texts_are_cut_on_one_line_and_marked():
    assert preview("short") == "short"
    cut = preview("x" * 1000, 50)
    assert len(cut) == 50 and cut.endswith("…")
    assert event_summary({"summary": "done", "n": 3}) == "summary=done n=3"


def test_snapshot_names_roles_and_joins_stats_and_checkin_deliveries():
    orchestrator = agent(id=2, role="orchestrator", state="idle")
    rows = ProjectRows(
        project={"id": 7, "name": "demo", "state": "running", "path": "/p", "start_branch": "main"},
        agents=[agent(), orchestrator],
        messages=[
            {
                "id": 9,
                "sender": "operator",
                "recipient_id": 1,
                "body": "hello\n" * 100,
                "kind": "message",
                "state": "delivered",
                "attempts": 1,
                "created_at": NOW - 9,
                "delivered_at": NOW - 8,
                "marker": "av-9",
                "last_error": None,
                "checkin_id": None,
            },
        ],
        checkins=[
            {
                "id": 4,
                "creator": "operator",
                "recipient_id": 2,
                "state": "pending",
                "due_at": NOW + 60,
                "every_s": 600.0,
                "fired_count": 2,
                "last_fired_at": NOW - 540,
                "note": "review",
            },
        ],
        events=[{"id": 3, "at": NOW - 1, "kind": "agent.done", "agent_id": 1, "data": {"a": 1}}],
        activity={1: NOW - 8},
        pending={2: {"queued": 2, "leased": 1}},
        checkin_messages={4: {"id": 8, "state": "delivered"}},
    )
    view = SandboxView(
        infos={"developer": sandbox()},
        stats={"developer": SandboxStats(12.5, 80.0, 512.0)},
        sampled_at=NOW,
    )
    data = snapshot(rows, view, NOW, TIMEOUT_S)
    assert data["project"] == {
        "name": "demo",
        "state": "running",
        "path": "/p",
        "start_branch": "main",
    }
    developer, orch = data["agents"]
    assert developer["state"] == "working"
    assert (developer["cpu_percent"], developer["memory_mb"]) == (12.5, 80.0)
    assert developer["sandbox"] == "running"
    assert developer["last_activity_at"] == NOW - 8
    assert (orch["queued"], orch["leased"], orch["next_checkin_at"]) == (2, 1, NOW + 60)
    assert orch["cpu_percent"] is None and orch["sandbox"] is None
    message = data["messages"][0]
    assert (message["recipient"], message["state"]) == ("developer", "delivered")
    assert len(message["preview"]) <= 240 and message["size"] == 600
    checkin = data["checkins"][0]
    assert (checkin["recipient"], checkin["message_state"]) == ("orchestrator", "delivered")
    assert data["events"][0]["role"] == "developer"


@pytest.mark.parametrize(
    ("server", "client", "host", "allowed"),
    [
        (("127.0.0.1", 8123), ("127.0.0.1", 50000), "127.0.0.1:8123", True),
        (("127.0.0.1", 8123), ("127.0.0.1", 50000), "localhost:8123", True),
        (("::1", 8123), ("::1", 50000), "[::1]:8123", True),
        # DNS rebinding: a web page's own name pointed at 127.0.0.1.
        (("127.0.0.1", 8123), ("127.0.0.1", 50000), "evil.example:8123", False),
        # The Unix socket (what the sandboxes mount): no TCP address.
        (None, None, "agentvisor", False),
        (("/state/sock/api.sock", None), None, "agentvisor", False),
        # A listener on another address, reached from outside.
        (("172.17.0.1", 8123), ("172.17.0.2", 40000), "127.0.0.1:8123", False),
    ],
)
def test_only_loopback_tcp_requests_naming_a_loopback_host_read_without_a_token(
    server: Any, client: Any, host: str, allowed: bool
):
    assert is_loopback_request({"server": server, "client": client}, host) is allowed


def test_egress_rows_show_each_request_and_its_decision():
    events = [
        {"id": 3, "at": NOW, "data": {"role": "developer", "method": "CONNECT",
                                      "host": "pypi.org", "port": 443, "allowed": True,
                                      "reason": "allowed", "bytes_up": 10, "bytes_down": 99}},
        {"id": 2, "at": NOW - 1, "data": {"role": None, "method": "GET", "host": "x" * 500,
                                          "port": 80, "allowed": False,
                                          "reason": "no-credentials"}},
    ]  # fmt: skip
    first, second = egress_rows(events)
    assert first == {"id": 3, "at": NOW, "role": "developer", "method": "CONNECT",
                     "host": "pypi.org", "port": 443, "allowed": True, "reason": "allowed",
                     "bytes_up": 10, "bytes_down": 99}  # fmt: skip
    assert second["allowed"] is False and second["reason"] == "no-credentials"
    assert len(second["host"]) == 120 and second["bytes_down"] == 0
