"""The egress event limit's arithmetic, with the time passed in."""

from __future__ import annotations

from agentvisor.server.egress.event_limit import EventLimit


def request(host: str, allowed: bool = False, down: int = 0) -> dict[str, object]:
    return {"role": "dev", "host": host, "allowed": allowed, "bytes_down": down}


def test_past_the_limit_requests_are_summed_up_once_the_window_ends():
    limit = EventLimit(per_window=2, window_s=60.0)
    written = [limit.admit(7, 1, request(f"h{i % 2}", i == 3, 10), now=float(i)) for i in range(6)]
    assert written == [True, True, False, False, False, False]
    assert limit.due(59.0) == [] and limit.next_due() == 60.0
    (summary,) = limit.due(60.0)
    assert (summary.agent_id, summary.project_id) == (7, 1)
    data = summary.data
    assert data["suppressed"] == 4 and data["denied"] == 3 and data["allowed"] is False
    assert data["hosts"] == {"h0": 2, "h1": 2} and data["bytes_down"] == 40
    assert limit.due(120.0) == [] and limit.next_due() is None
    assert limit.admit(7, 1, request("h"), now=61.0)  # a new window


def test_agents_have_windows_of_their_own_and_no_agent_counts_as_one():
    limit = EventLimit(per_window=1)
    assert limit.admit(1, 1, request("a"), 0.0) and limit.admit(2, 1, request("a"), 0.0)
    assert limit.admit(None, None, request("a"), 0.0)
    assert not limit.admit(None, None, request("a"), 0.0)
    assert [s.agent_id for s in limit.due(0.0, everything=True)] == [0]


def test_zero_is_no_limit():
    limit = EventLimit(per_window=0)
    assert all(limit.admit(1, 1, request("a"), 0.0) for _ in range(1000))
    assert limit.due(1e9, everything=True) == []
