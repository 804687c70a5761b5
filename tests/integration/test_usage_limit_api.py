"""A usage-limit report pauses the agent: its messages are held until the reset time plus the
margin, then it is told to continue and the held messages flow. The server's clock is moved
with its test-only offset file; the real app, served in process."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers import wait_until
from tests.in_process_api import in_process_server


def test_usage_limit_pauses_then_resumes_at_the_named_time(short_tmp: Path):
    offset = short_tmp / "clock-offset"
    offset.write_text("0")
    with in_process_server(
        short_tmp / "state",
        env={
            "AGENTVISOR_CLOCK_OFFSET_FILE": str(offset),
            "AGENTVISOR_USAGE_LIMIT_MARGIN_S": "60",
            # the clock jumps in this test: let the scheduler look again within a second
            "AGENTVISOR_SCHEDULER_MAX_SLEEP_S": "0.5",
        },
    ) as server:
        server.register_agent("demo", "orchestrator")
        dev = server.client_for(server.register_agent("demo", "developer"))
        reset_at = time.time() + 3600
        dev.post(
            "/v1/events",
            {
                "kind": "usage_limit",
                "data": {"notice": "5-hour limit reached", "paused_until": reset_at},
            },
        )
        server.client.post("/v1/messages", {"to": "developer", "body": "held while paused"})
        agent = next(a for a in server.client.get("/v1/agents") if a["role"] == "developer")
        assert agent["state"] == "paused"
        assert abs(agent["paused_until"] - (reset_at + 60)) < 1
        assert dev.post("/v1/inbox/lease", wait_s=0.5) is None
        resume = [c for c in server.client.get("/v1/checkins") if c["recipient_id"] == agent["id"]]
        assert len(resume) == 1 and abs(resume[0]["due_at"] - (reset_at + 60)) < 1
        # the orchestrator hears about it
        notices = server.client.get("/v1/messages", recipient="orchestrator")
        assert any("usage limit" in m["body"] for m in notices)

        offset.write_text(str(3600 + 61))  # the reset time plus the margin has come
        # First agentvisor's notice (as documented), then what was held, in its order.
        first = wait_until(lambda: dev.post("/v1/inbox/lease", wait_s=1), timeout_s=20)
        assert "usage limit has reset" in first["message"]["body"]
        assert first["message"]["sender"] == "agentvisor"
        dev.post(f"/v1/inbox/{first['message']['id']}/ack", {"lease_id": first["lease_id"]})
        second = wait_until(lambda: dev.post("/v1/inbox/lease", wait_s=1), timeout_s=20)
        assert second["message"]["body"] == "held while paused"
