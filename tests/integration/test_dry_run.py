"""The newcomer's dry run, `agentvisor up SPEC --model scripted[:SCRIPT]`, end to end: the real
Claude Code in three sandboxes, the scripted model server that `up` starts on the host as the
project's model upstream, no key and no login anywhere (none on the host either). Every agent
answers its briefing and schedules its own check-in; at it the teammates report their tasks
and the orchestrator the project complete; `down` stops the model server, `destroy` too."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentvisor import cli, launch
from agentvisor.client import ApiClient
from agentvisor.config import Settings
from agentvisor.errors import AgentvisorError
from agentvisor.launch import project_name
from agentvisor.model import dry_run
from agentvisor.sandbox.sandboxes import SandboxBackend
from agentvisor.server import server_control
from agentvisor.testing.model_server import DRY_RUN_SCRIPT
from tests.conftest import CLAUDE_TEST_IMAGE
from tests.helpers import make_repo, scripted_up, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = CLAUDE_TEST_IMAGE
ROLES = ("orchestrator", "developer", "tester")
SPEC = """# Word counter

Build a command-line tool that counts the words of a text file, with tests and a README.
"""


def _quick(script: dict) -> dict:
    """The built-in dry-run script with check-ins in 3 s instead of a minute."""
    text = json.dumps(script).replace("agent checkin 1 ", "agent checkin 0.05 ")
    return json.loads(text)


def test_a_dry_run_brings_up_the_real_claude_code_against_the_scripted_model(
    short_tmp: Path, dry_run_host: Settings
):
    settings = dry_run_host
    repo = make_repo(short_tmp / f"wc-{short_tmp.name[-6:].lower()}", SPEC)
    script = short_tmp / "team.json"
    script.write_text(json.dumps(_quick(DRY_RUN_SCRIPT)))
    # As a newcomer types it (the README's tour), with a quicker copy of the built-in script.
    name = project_name(repo)  # known before `up`: cleaned up whatever happens
    try:
        up = scripted_up(settings, repo / "spec.md", ROLES, script, IMAGE)
        assert up.returncode == 0, up.stderr[-3000:]
        report = json.loads(up.stdout)
        assert report["project"] == name
        assert report["profile"] == "claude"
        assert {a["briefing"] for a in report["agents"]} == {"delivered"}, report["agents"]
        model = dry_run.current(settings, name)
        assert model is not None and model.url.startswith("http://127.0.0.1:")
        client = ApiClient(settings)

        def state() -> str:
            return next(p["state"] for p in client.get("/v1/projects") if p["name"] == name)

        # Briefing -> check-in -> report, for every agent; the orchestrator's closes the project.
        def reports() -> dict[int, str]:
            done = client.get("/v1/events", project=name, limit=500)
            data = [(e["agent_id"], e["data"]) for e in done if e["kind"] == "agent.done"]
            return {a: (json.loads(d) if isinstance(d, str) else d)["summary"] for a, d in data}

        got = wait_until(
            lambda: len(r := reports()) == len(ROLES) and r,
            timeout_s=120,
            message="a report from every agent",
        )
        assert state() == "complete"
        summaries = sorted(got.values())
        assert summaries[0].startswith("PROJECT COMPLETE (dry run)")
        assert summaries[1:] == [
            "developer: task complete (dry run)",
            "tester: task complete (dry run)",
        ]
        checkins = client.get("/v1/checkins", project=name, state="all")
        assert {c["note"] for c in checkins} >= {"Dry run: review the team"}

        # The scripted model saw every agent by name and never a credential of the host's.
        lines = dry_run.requests_file(settings, name).read_text().splitlines()
        turns = [json.loads(line) for line in lines if '"conversation": true' in line]
        assert {t["role"] for t in turns} == set(ROLES)
        assert {t["agent"] for t in turns} == {f"{name}/{role}" for role in ROLES}
        dry = hashlib.sha256(b"agentvisor-dry-run").hexdigest()
        assert {t["credential_sha256"] for t in turns} == {dry}

        # Claude Code's first screen asked for nothing (tmux focus-events are on).
        pane = SandboxBackend(settings).pane_history(name, "developer", lines=0)
        assert "focus-events" not in pane and "Dry run" in pane

        # `status` shows where it stands; `down` stops the model server with the sandboxes.
        shown = CliRunner().invoke(cli.app, ["--state", str(settings.state_dir), "status", name])
        assert shown.exit_code == 0 and "(complete)" in shown.output, shown.output
        launch.down(settings, name)
        assert dry_run.current(settings, name) is None
        assert state() == "stopped"
        client.close()
    finally:
        with contextlib.suppress(AgentvisorError):  # `up` may have failed before the project
            launch.destroy(settings, name, remove_worktrees=True)
        dry_run.stop(settings, name)
        server_control.stop_server(settings)
    assert dry_run.current(settings, name) is None


def test_model_options_other_than_scripted_are_refused_with_what_to_do(tmp_path: Path):
    with pytest.raises(Exception, match="the only choice is 'scripted'"):
        dry_run.parse_model("claude-opus")
    bad = tmp_path / "bad.json"
    bad.write_text('{"agents": {"developer": {"text": "x"}}}')
    with pytest.raises(Exception, match="steps of 'developer' must be a JSON list"):
        dry_run.parse_model(f"scripted:{bad}")
    assert dry_run.parse_model("scripted") == dry_run.parse_model("scripted:dry-run") == "dry-run"
    assert dry_run.parse_model(None) is None
