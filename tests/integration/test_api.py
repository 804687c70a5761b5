"""The host API: most tests over the real app served in process (tests/in_process_api.py); the
socket, a second server, a restart and `doctor` over a real server process and its socket."""

from __future__ import annotations

import os
import stat

import pytest

from agentvisor.client import ApiClient
from agentvisor.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    TooLarge,
    Unauthorized,
)
from tests.conftest import ServerProcess
from tests.helpers import team_clients, wait_until
from tests.in_process_api import InProcessServer, in_process_server


@pytest.fixture
def team(api: InProcessServer) -> dict[str, ApiClient]:
    return team_clients(api)


def test_socket_and_operator_token_have_tight_modes(server: ServerProcess):
    assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(server.settings.operator_token_path).st_mode) == 0o600


def test_health_and_openapi_need_no_token(api: InProcessServer):
    with api.http() as http:
        assert http.get("/v1/health").json()["ok"] is True
        assert "/v1/messages" in http.get("/openapi.json").json()["paths"]
        assert http.get("/docs").status_code == 200


def test_messages_to_one_recipient_arrive_in_order(api: InProcessServer, team):
    for i in range(20):
        team["orchestrator"].post("/v1/messages", {"to": "developer", "body": f"m{i}"})
    dev = team["developer"]
    got = []
    while (lease := dev.post("/v1/inbox/lease", wait_s=0)) is not None:
        got.append(lease["message"]["body"])
        dev.post(f"/v1/inbox/{lease['message']['id']}/ack", {"lease_id": lease["lease_id"]})
    assert got == [f"m{i}" for i in range(20)]


def test_idempotency_key_makes_a_resend_a_no_op(api: InProcessServer, team):
    orch = team["orchestrator"]
    first = orch.post("/v1/messages", {"to": "tester", "body": "x", "idempotency_key": "k1"})
    again = orch.post("/v1/messages", {"to": "tester", "body": "x", "idempotency_key": "k1"})
    assert again["id"] == first["id"]
    c1 = orch.post("/v1/checkins", {"minutes": 5, "note": "n", "idempotency_key": "loop"})
    c2 = orch.post("/v1/checkins", {"minutes": 5, "note": "n", "idempotency_key": "loop"})
    assert c1["id"] == c2["id"]
    assert len(api.client.get("/v1/checkins")) == 1


def test_long_poll_returns_as_soon_as_a_message_is_sent(api: InProcessServer, team):
    import threading
    import time

    result = {}

    def poll():
        start = time.monotonic()
        result["lease"] = team["developer"].post("/v1/inbox/lease", wait_s=20)
        result["waited"] = time.monotonic() - start

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    team["orchestrator"].post("/v1/messages", {"to": "developer", "body": "wake"})
    thread.join(10)
    assert result["lease"]["message"]["body"] == "wake"
    assert result["waited"] < 2


def test_long_poll_times_out_with_204(api: InProcessServer, team):
    assert team["developer"].post("/v1/inbox/lease", wait_s=0.2) is None


def test_forged_and_missing_tokens_are_refused(api: InProcessServer, team):
    forged = api.client_for("ava_" + "A" * 43)
    with pytest.raises(Unauthorized, match="unknown or revoked"):
        forged.get("/v1/agents")
    with api.http() as http:
        response = http.post("/v1/messages", json={"to": "developer", "body": "x"})
        assert response.status_code == 401
        assert "bearer token" in response.json()["detail"]
    with api.http("x") as http:
        assert http.get("/v1/agents", headers={"Authorization": "Basic abc"}).status_code == 401


def test_agent_identity_comes_from_its_token_not_the_body(api: InProcessServer, team):
    dev = team["developer"]
    with pytest.raises(InvalidInput, match="sender"):
        dev.post("/v1/messages", {"to": "tester", "body": "x", "sender": "orchestrator"})
    sent = dev.post("/v1/messages", {"to": "tester", "body": "hi"})
    assert sent["sender"] == "developer"


def test_agent_cannot_ack_or_read_another_agents_inbox(api: InProcessServer, team):
    team["orchestrator"].post("/v1/messages", {"to": "developer", "body": "private"})
    lease = team["developer"].post("/v1/inbox/lease", wait_s=0)
    with pytest.raises(NotFound):
        team["tester"].post(
            f"/v1/inbox/{lease['message']['id']}/ack", {"lease_id": lease["lease_id"]}
        )
    assert team["tester"].get("/v1/inbox") == []
    assert team["tester"].post("/v1/inbox/lease", wait_s=0) is None


def test_agent_cannot_act_in_another_project(api: InProcessServer, team):
    other = api.client_for(api.register_agent("other", "developer"))
    with pytest.raises(Forbidden, match="cannot act on project 'demo'"):
        other.post("/v1/messages", {"to": "developer", "body": "x", "project": "demo"})
    with pytest.raises(NotFound):  # 'tester' does not exist in project 'other'
        other.post("/v1/messages", {"to": "tester", "body": "x"})
    with pytest.raises(Forbidden):
        other.post("/v1/agents", {"project": "demo", "role": "evil"})


def test_agent_cannot_cancel_checkins_of_another_project(api: InProcessServer, team):
    checkin = team["developer"].post("/v1/checkins", {"minutes": 10, "note": "mine"})
    other = api.client_for(api.register_agent("other", "developer"))
    with pytest.raises(NotFound):
        other.delete(f"/v1/checkins/{checkin['id']}")


@pytest.mark.parametrize(
    ("body", "error", "text"),
    [
        ({"to": "nobody", "body": "x"}, NotFound, "unknown agent 'nobody'"),
        ({"to": "Bad Name", "body": "x"}, InvalidInput, "is not valid"),
        ({"to": "developer", "body": ""}, InvalidInput, "empty"),
        ({"to": "developer", "body": "   \n"}, InvalidInput, "empty"),
        ({"to": "developer", "body": "x" * (256 * 1024 + 1)}, TooLarge, "over the limit"),
        ({"to": "developer", "body": "a\x00b"}, InvalidInput, "NUL"),
        ({"to": "developer"}, InvalidInput, "body: Field required"),
        ({"to": "developer", "body": 5}, InvalidInput, "body"),
    ],
)
def test_bad_messages_get_clear_4xx(api: InProcessServer, team, body, error, text):
    with pytest.raises(error, match=text):
        team["orchestrator"].post("/v1/messages", body)


def test_a_body_at_the_limit_is_accepted(api: InProcessServer, team):
    body = "é" * (128 * 1024)  # 256 KiB of UTF-8
    sent = team["orchestrator"].post("/v1/messages", {"to": "developer", "body": body})
    assert api.client.get("/v1/messages", limit=1)[0]["body"] == body
    assert sent["state"] == "queued"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"minutes": 0, "note": "n"}, "not allowed"),
        ({"minutes": -5, "note": "n"}, "not allowed"),
        ({"minutes": 10**9, "note": "n"}, "not allowed"),
        ({"minutes": 5, "note": "n", "every_minutes": 0.001}, "every 0.001 minutes"),
        ({"note": "n"}, "exactly one of"),
        ({"minutes": 5, "due_at": 5, "note": "n"}, "exactly one of"),
        ({"minutes": 5, "note": ""}, "empty"),
        ({"minutes": 5, "note": "n", "to": "ghost"}, "unknown agent"),
    ],
)
def test_bad_checkins_get_clear_4xx(api: InProcessServer, team, body, text):
    with pytest.raises((InvalidInput, NotFound), match=text):
        team["developer"].post("/v1/checkins", body)


def test_malformed_json_gets_clear_422(api: InProcessServer, team):
    with api.http(api.operator_token) as http:
        response = http.post(
            "/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert response.json()["detail"] == "the request body is not valid JSON: send a JSON object"


def test_operator_must_name_a_project_when_there_are_several(api: InProcessServer, team):
    api.register_agent("other", "orchestrator")
    with pytest.raises(InvalidInput, match="say which project"):
        api.client.post("/v1/messages", {"to": "developer", "body": "x"})
    sent = api.client.post("/v1/messages", {"to": "developer", "body": "x", "project": "demo"})
    assert sent["state"] == "queued"


def test_stale_lease_ack_is_a_conflict(api: InProcessServer, team):
    team["orchestrator"].post("/v1/messages", {"to": "developer", "body": "x"})
    lease = team["developer"].post("/v1/inbox/lease", wait_s=0)
    with pytest.raises(Conflict, match="no longer valid"):
        team["developer"].post(f"/v1/inbox/{lease['message']['id']}/ack", {"lease_id": "nope"})


def test_a_lease_says_whether_the_message_was_handed_out_before(api: InProcessServer, team):
    team["orchestrator"].post("/v1/messages", {"to": "developer", "body": "x"})
    first = team["developer"].post("/v1/inbox/lease", wait_s=0)
    assert first["message"]["leases"] == 1  # never typed: the shim skips the history search

    team["developer"].post("/v1/inbox/release", {})  # as a restarted shim does
    again = team["developer"].post("/v1/inbox/lease", wait_s=0)
    assert again["message"]["id"] == first["message"]["id"] and again["message"]["leases"] == 2


def test_done_reports_completion_to_the_orchestrator(api: InProcessServer, team):
    team["developer"].post("/v1/done", {"summary": "feature X works"})
    lease = team["orchestrator"].post("/v1/inbox/lease", wait_s=0)
    assert lease["message"]["kind"] == "completion"
    assert "developer" in lease["message"]["body"]
    assert "feature X works" in lease["message"]["body"]


def test_checkin_fires_on_time_in_real_time(api: InProcessServer, team):
    import time

    checkin = team["developer"].post("/v1/checkins", {"minutes": 0.01, "note": "soon"})
    lease = team["developer"].post("/v1/inbox/lease", wait_s=10)
    received = time.time()
    assert lease["message"]["kind"] == "checkin"
    assert lease["message"]["body"] == "Scheduled check-in: soon"
    assert received - checkin["due_at"] < 1.0


def test_metrics_count_deliveries_and_pending_checkins(api: InProcessServer, team):
    team["orchestrator"].post("/v1/messages", {"to": "developer", "body": "x"})
    lease = team["developer"].post("/v1/inbox/lease", wait_s=0)
    team["developer"].post(
        f"/v1/inbox/{lease['message']['id']}/ack", {"lease_id": lease["lease_id"]}
    )
    team["developer"].post("/v1/checkins", {"minutes": 30, "note": "later"})
    text = api.client.get("/metrics")
    assert 'agentvisor_deliveries_total{state="delivered"} 1' in text
    assert "agentvisor_checkins_pending 1" in text
    assert "agentvisor_delivery_latency_seconds_count 1" in text


def test_second_server_on_same_state_is_refused(server: ServerProcess):
    import subprocess
    import sys

    second = subprocess.run(
        [sys.executable, "-m", "agentvisor", "--state", str(server.state_dir), "serve"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert "Traceback" not in second.stderr
    assert server.client.get("/v1/health")["ok"]


def test_accepted_messages_survive_a_restart(server: ServerProcess):
    server.register_agent("demo", "developer")
    orchestrator = server.client_for(server.register_agent("demo", "orchestrator"))
    orchestrator.post("/v1/messages", {"to": "developer", "body": "durable"})
    server.restart()
    token = server.register_agent("demo", "developer")  # fresh token after restart
    dev = server.client_for(token)
    lease = wait_until(lambda: dev.post("/v1/inbox/lease", wait_s=1))
    assert lease["message"]["body"] == "durable"


def test_recurring_checkin_keeps_its_cadence_in_real_time(short_tmp):
    """every 0.6 s (a test-only minimum) for 5 firings: each lands on the original grid."""
    settings = {"AGENTVISOR_MIN_EVERY_MINUTES": "0.005"}
    with in_process_server(short_tmp / "rt", env=settings) as api:
        dev = api.client_for(api.register_agent("demo", "developer"))
        checkin = dev.post("/v1/checkins", {"minutes": 0.01, "every_minutes": 0.01, "note": "tick"})
        period, first_due = 0.6, checkin["due_at"]

        def fired_five() -> list[dict] | None:
            rows = [
                m
                for m in api.client.get("/v1/messages", limit=50)
                if m["checkin_id"] == checkin["id"]
            ]
            return rows if len(rows) >= 5 else None

        rows = sorted(wait_until(fired_five, timeout_s=20), key=lambda m: m["id"])[:5]
        for k, message in enumerate(rows):
            due = first_due + k * period
            assert 0 <= message["created_at"] - due < 0.2, (k, message["created_at"] - due)
            assert message["body"] == "Scheduled check-in: tick"
        dev.delete(f"/v1/checkins/{checkin['id']}")


def test_health_reports_database_disk_and_docker(api: InProcessServer):
    health = api.client.get("/v1/health")
    assert health["db"] == "ok" and health["disk_free_mb"] > 0
    assert health["docker"] == "ok" or health["docker"].startswith("not reachable")


def test_doctor_checks_tools_engine_disk_and_server(server: ServerProcess):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "agentvisor", "--state", str(server.state_dir), "doctor", "--json"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    import json

    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert set(checks) == {"tools", "docker", "image", "disk", "server"}
    assert checks["server"]["ok"], checks["server"]
    assert checks["disk"]["ok"] and checks["tools"]["ok"]
    assert done.returncode == (0 if all(c["ok"] for c in checks.values()) else 1)


def test_only_the_operator_sets_a_projects_state_and_only_to_a_known_one(
    api: InProcessServer, team
):
    operator = api.client
    assert operator.post("/v1/projects/demo/state", {"state": "running"})["state"] == "running"
    with pytest.raises(Forbidden):
        team["developer"].post("/v1/projects/demo/state", {"state": "complete"})
    with api.http(api.operator_token) as http:
        refused = http.post("/v1/projects/demo/state", json={"state": "paused"})
    assert refused.status_code == 422 and "state" in refused.json()["detail"]
    assert operator.post("/v1/projects/demo/state", {"state": "stopped"})["state"] == "stopped"
    kinds = [e["kind"] for e in operator.get("/v1/events", project="demo")]
    assert kinds.count("project.state") >= 2
