"""Delivery into real sandboxes: messages and check-ins reach every pane; awkward messages arrive
literally; a killed shim or a killed container loses and doubles nothing."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import docker
import pytest
from typer.testing import CliRunner

from agentvisor import cli, launch
from agentvisor.client import ApiClient
from agentvisor.config import Settings, load_settings
from agentvisor.sandbox.sandboxes import SandboxBackend
from agentvisor.server import server_control
from tests.conftest import require
from tests.helpers import docker_answers, make_repo, sandbox_test_image, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SPEC = """# Delivery check

Build a tiny command line tool that prints the current date in three formats, with tests.
"""
ROLES = ("orchestrator", "developer", "tester")


class Team:
    def __init__(self, settings: Settings, project: str) -> None:
        self.settings = settings
        self.project = project
        self.client = ApiClient(settings)
        self.backend = SandboxBackend(settings)

    def send(self, role: str, body: str) -> dict:
        return self.client.post("/v1/messages", {"project": self.project, "to": role, "body": body})

    def delivered(self, message_id: int, timeout_s: float = 60) -> dict:
        def done() -> dict | None:
            rows = self.client.get("/v1/messages", project=self.project, limit=500)
            row = next((m for m in rows if m["id"] == message_id), None)
            return row if row and row["state"] == "delivered" else None

        return wait_until(done, timeout_s=timeout_s, message=f"message {message_id} delivered")

    def pane(self, role: str) -> str:
        return self.backend.pane_history(self.project, role, lines=5000)

    def typed_count(self, role: str, marker: str) -> int:
        return self.pane(role).count(f"[{marker}]")

    def container(self, role: str) -> str:
        return f"agentvisor-{self.project}-{role}"


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory):
    import tempfile

    require(docker_answers(), "a Docker engine")
    base = Path(tempfile.mkdtemp(prefix="av-", dir="/tmp"))
    repo = make_repo(base / f"deliv-{base.name[-6:].lower()}", SPEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVISOR_")}
    env["AGENTVISOR_DEMO_IMAGE"] = sandbox_test_image()
    settings = load_settings(base / "state", env=env, memory_mb=512)
    report = launch.up(
        settings, launch.UpOptions(spec=repo / "spec.md", roles=ROLES, agent="demo", wait_s=90)
    )
    assert {a.briefing for a in report.agents} == {"delivered"}
    team = Team(settings, report.project)
    yield team
    team.client.close()
    team.backend.remove(report.project, volumes=True)
    server_control.stop_server(settings)


def test_a_message_and_a_checkin_reach_every_pane(team: Team):
    sent = {role: team.send(role, f"hello {role}") for role in ROLES}
    checkins = {
        role: team.client.post(
            "/v1/checkins",
            {"project": team.project, "to": role, "minutes": 0.01, "note": f"tick {role}"},
        )
        for role in ROLES
    }
    for role in ROLES:
        message = team.delivered(sent[role]["id"])
        assert team.typed_count(role, message["marker"]) == 1

        def fired(role: str = role) -> dict | None:
            rows = team.client.get("/v1/messages", project=team.project, limit=500)
            return next(
                (
                    m
                    for m in rows
                    if m["checkin_id"] == checkins[role]["id"] and m["state"] == "delivered"
                ),
                None,
            )

        tick = wait_until(fired, timeout_s=60, message=f"{role}'s check-in")
        assert team.typed_count(role, tick["marker"]) == 1
        assert f"tick {role}" in team.pane(role)


def _received(team: Team, role: str, marker: str) -> tuple[int, int]:
    """What the demo agent says it received for `marker`: (lines, characters)."""
    found = re.search(rf"got {re.escape(marker)}: (\d+) lines, (\d+) chars", team.pane(role))
    assert found, f"the demo agent did not report {marker}"
    return int(found[1]), int(found[2])


def test_five_lines_arrive_as_one_prompt(team: Team):
    body = "\n".join(f"line {i} of five" for i in range(1, 6))
    message = team.delivered(team.send("developer", body)["id"])
    assert _received(team, "developer", message["marker"]) == (5, len(body))


def test_twenty_kilobytes_arrive_whole(team: Team):
    body = "\n".join(f"{i:05d} " + "x" * 94 for i in range(200))  # 200 lines, 20,199 chars
    message = team.delivered(team.send("developer", body)["id"])
    assert _received(team, "developer", message["marker"]) == (200, len(body))


def test_escape_sequences_and_key_names_are_typed_literally(team: Team):
    body = "red \x1b[31mALERT\x1b[0m; then C-c Enter Escape C-d ; #{pane_id}"
    message = team.delivered(team.send("developer", body)["id"])
    pane = team.pane("developer")
    assert "red ^[[31mALERT^[[0m; then C-c Enter Escape C-d ; #{pane_id}" in pane
    assert team.typed_count("developer", message["marker"]) == 1
    assert "ok: received " + message["marker"] in pane  # the agent is alive and answered


def test_the_agents_last_output_survives_its_restart_in_agentvisor_logs(team: Team):
    """Issue 14's reproduction: tmux's respawn clears the screen that shows RESPAWN-A and
    RESPAWN-C; `agentvisor logs` still shows each once, and what came after."""
    first = team.delivered(team.send("orchestrator", "RESPAWN-A")["id"])
    last = team.delivered(team.send("orchestrator", "RESPAWN-C DEMO:exit")["id"])
    wait_until(
        lambda: (
            team.pane("orchestrator").rstrip().endswith("demo>")
            and "the agent CLI restarted here" in team.pane("orchestrator")
        ),
        timeout_s=60,
        message="the demo agent restarted",
    )
    after = team.delivered(team.send("orchestrator", "after the restart")["id"])
    state = ["--state", str(team.settings.state_dir)]
    logs = CliRunner().invoke(cli.app, [*state, "logs", "orchestrator", "--lines", "100000"])
    assert logs.exit_code == 0, logs.output
    assert sum("RESPAWN" in line for line in logs.output.splitlines()) >= 2, logs.output
    assert logs.output.count("RESPAWN-A") == 1 and logs.output.count("RESPAWN-C") == 1
    for message in (first, last, after):
        assert team.typed_count("orchestrator", message["marker"]) == 1


def test_killed_shim_is_restarted_and_nothing_is_lost_or_doubled(team: Team):
    before = team.delivered(team.send("tester", "before the shim died")["id"])
    # The pattern matches the demo agent too: the new shim respawns its pane, which clears
    # the screen that shows `before`; the saved screen keeps it in the history, once.
    subprocess.run(
        ["docker", "exec", team.container("tester"), "pkill", "-9", "-f", "python3 -m agent_shim"],
        check=True,
    )
    sent = [team.send("tester", f"after the shim died {i}") for i in range(3)]
    for message in sent:
        delivered = team.delivered(message["id"], timeout_s=90)
        assert team.typed_count("tester", delivered["marker"]) == 1
    assert team.typed_count("tester", before["marker"]) == 1
    assert "the agent CLI restarted here" in team.pane("tester")


def test_killed_container_comes_back_and_pending_messages_arrive_once(team: Team):
    subprocess.run(["docker", "kill", team.container("developer")], check=True, capture_output=True)
    sent = [team.send("developer", f"while the sandbox was down {i}") for i in range(3)]
    # The server's watchdog starts it again at the engine's "die" event, not at its next pass
    # (a minute away while the events are read).
    engine = docker.from_env()
    wait_until(
        lambda: engine.containers.get(team.container("developer")).status == "running",
        timeout_s=8,
        message="the watchdog to start the killed sandbox again",
    )
    for message in sent:
        delivered = team.delivered(message["id"], timeout_s=90)
        assert team.typed_count("developer", delivered["marker"]) == 1
