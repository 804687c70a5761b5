"""The `agent` command and the old tools' wrappers against a real server process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from agent_shim.client import ApiClient, ApiError, ServerUnreachable
from tests.conftest import ServerProcess

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "agent_shim" / "bin"


@pytest.fixture
def developer(server: ServerProcess, tmp_path: Path) -> dict[str, str]:
    """The environment of the developer's sandbox, pointing at the real server."""
    server.register_agent("demo", "orchestrator")
    token = tmp_path / "token"
    token.write_text(server.register_agent("demo", "developer"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVISOR_")}
    env.pop("PYTHONPATH", None)
    env.update(AGENTVISOR_SOCKET=str(server.socket_path), AGENTVISOR_TOKEN_FILE=str(token))
    return env


def agent(
    env: dict[str, str], *argv: str, program: str = "agent", stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / program), *argv],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def messages_to(server: ServerProcess, role: str) -> list[dict]:
    return server.client.get("/v1/messages", project="demo", recipient=role)


def test_whoami_and_team(developer: dict[str, str]):
    assert agent(developer, "whoami").stdout.strip() == "developer on project demo"
    team = agent(developer, "--json", "team")
    assert {a["role"] for a in json.loads(team.stdout)} == {"orchestrator", "developer"}


def test_send_reads_the_message_from_an_argument_or_stdin(
    server: ServerProcess, developer: dict[str, str]
):
    first = agent(developer, "send", "orchestrator", "tests pass")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("message ")
    agent(developer, "send", "orchestrator", "-", stdin="from stdin\nline 2\n")
    bodies = [m["body"] for m in messages_to(server, "orchestrator")]
    assert "tests pass" in bodies and "from stdin\nline 2\n" in bodies


def test_checkin_for_self_and_for_another_role(server: ServerProcess, developer: dict[str, str]):
    assert agent(developer, "checkin", "30", "look at CI").returncode == 0
    result = agent(developer, "checkin", "5", "nudge", "--every", "60", "--to", "proj:0")
    assert result.returncode == 0, result.stderr
    assert "then every 60 min" in result.stdout
    pending = server.client.get("/v1/checkins", project="demo")
    assert {(c["note"], c["every_s"]) for c in pending} >= {
        ("look at CI", None),
        ("nudge", 3600.0),
    }


def test_done_reports_to_the_orchestrator(server: ServerProcess, developer: dict[str, str]):
    assert agent(developer, "done", "feature X merged").returncode == 0
    assert any("feature X merged" in m["body"] for m in messages_to(server, "orchestrator"))


def test_inbox_lists_waiting_messages(server: ServerProcess, developer: dict[str, str]):
    assert agent(developer, "inbox").stdout.strip() == "no messages waiting"
    server.client.post(
        "/v1/messages", {"to": "developer", "body": "please review", "project": "demo"}
    )
    assert "from operator: please review" in agent(developer, "inbox").stdout


def test_event_data_from_stdin_as_hooks_pass_it(server: ServerProcess, developer: dict[str, str]):
    result = agent(developer, "event", "tool_use", "-", stdin='{"tool": "Bash"}')
    assert result.returncode == 0, result.stderr
    events = server.client.get("/v1/events", project="demo")
    assert any(e["kind"] == "agent.tool_use" and e["data"] == {"tool": "Bash"} for e in events)


def test_an_api_error_is_one_line_and_exit_1(developer: dict[str, str]):
    result = agent(developer, "send", "nobody", "hello")
    assert result.returncode == 1
    assert result.stderr.startswith("agent: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_old_wrappers_map_onto_agent(server: ServerProcess, developer: dict[str, str]):
    assert (
        agent(
            developer, "tmux-orc:0", "hi from the old tool", program="send-claude-message.sh"
        ).returncode
        == 0
    )
    assert (
        agent(
            developer,
            "15",
            "old style check-in",
            "tmux-orc:orchestrator",
            program="schedule_with_note.sh",
        ).returncode
        == 0
    )
    assert agent(developer, "developer", "all done", program="report-completion.sh").returncode == 0
    bodies = [m["body"] for m in messages_to(server, "orchestrator")]
    assert "hi from the old tool" in bodies
    assert any("all done" in b for b in bodies)
    checkins = server.client.get("/v1/checkins", project="demo")
    assert any(c["note"] == "old style check-in" for c in checkins)


def test_client_errors_carry_status_and_detail(server: ServerProcess, tmp_path: Path):
    token = tmp_path / "bad-token"
    token.write_text("not-a-token")
    with pytest.raises(ApiError) as error:
        ApiClient(str(server.socket_path), str(token)).whoami()
    assert error.value.status == 401 and error.value.detail
    with pytest.raises(ServerUnreachable):
        ApiClient(str(tmp_path / "none.sock"), str(token)).whoami()


def test_lease_ack_and_nack_through_the_client(server: ServerProcess, tmp_path: Path):
    token = tmp_path / "token"
    token.write_text(server.register_agent("demo", "tester"))
    client = ApiClient(str(server.socket_path), str(token))
    assert client.lease(wait_s=0) is None
    server.client.post("/v1/messages", {"to": "tester", "body": "one", "project": "demo"})
    lease = client.lease(wait_s=1)
    assert lease is not None and lease.body == "one" and lease.marker.startswith("av-")
    client.nack(lease.message_id, lease.lease_id, "pane busy", retry=True)
    again = client.lease(wait_s=1)
    assert again is not None and again.message_id == lease.message_id
    assert client.ack(again.message_id, again.lease_id)["state"] == "delivered"
    assert client.heartbeat("idle", {"pane_hash": "abc"})["ok"] is True


def test_old_window_numbers_and_spellings_reach_the_agent_of_that_position(
    server: ServerProcess, developer: dict[str, str]
):
    """`send-claude-message.sh proj:1 ...` (window 1 was the first agent after the
    orchestrator) and an old underscore spelling reach the right agent; a window past the team
    is one clear line."""
    server.register_agent("demo", "qa-engineer")
    team = agent(developer, "team").stdout.splitlines()
    assert team[0].startswith("0  orchestrator")
    position = next(int(line.split()[0]) for line in team if line.split()[1] == "qa-engineer")
    sent = agent(developer, f"proj:{position}", "by window", program="send-claude-message.sh")
    assert sent.returncode == 0, sent.stderr
    assert agent(developer, "send", "QA_Engineer", "old spelling").returncode == 0
    bodies = [m["body"] for m in messages_to(server, "qa-engineer")]
    assert bodies.count("by window") == 1 and "old spelling" in bodies
    past = agent(developer, "proj:9", "x", program="send-claude-message.sh")
    assert past.returncode == 2 and "window 9 has no agent" in past.stderr
    assert "Traceback" not in past.stderr
