"""End to end with real Docker, real tmux in the sandboxes, real git and the demo agent:
`up` brings a team up, the demo developer commits and reports done, `down`, `resume`, and a
check-in scheduled before `down` still arrives once."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agentvisor import launch
from agentvisor.client import ApiClient
from agentvisor.config import Settings, load_settings
from agentvisor.server import server_control
from tests.conftest import require
from tests.helpers import docker_answers, git, make_repo, sandbox_test_image, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SPEC = """# Greeting library

Build a small Python library that formats friendly greetings for a list of names, with unit
tests and a short README. Keep it dependency free.
"""


@pytest.fixture
def project_repo(short_tmp: Path) -> Path:
    return make_repo(short_tmp / f"greet-{short_tmp.name[-6:].lower()}", SPEC)  # names are global


@pytest.fixture
def settings(short_tmp: Path) -> Settings:
    require(docker_answers(), "a Docker engine")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVISOR_")}
    env["AGENTVISOR_DEMO_IMAGE"] = sandbox_test_image()
    env["AGENTVISOR_MIN_EVERY_MINUTES"] = "0.05"
    return load_settings(short_tmp / "state", env=env, memory_mb=512)


@pytest.fixture
def cleanup(settings: Settings):
    names: list[str] = []
    yield names
    from agentvisor.sandbox.sandboxes import SandboxBackend

    backend = SandboxBackend(settings)
    for name in names:
        backend.remove(name, volumes=True)
    server_control.stop_server(settings)


def _messages(client: ApiClient, project: str) -> list[dict]:
    return client.get("/v1/messages", project=project, limit=500)


def test_up_down_resume_with_demo_team(project_repo: Path, settings: Settings, cleanup):
    options = launch.UpOptions(
        spec=project_repo / "spec.md",
        roles=("orchestrator", "developer", "tester"),
        agent="demo",
        wait_s=90,
        allow=("pypi", "127.0.0.1:9"),  # `up --allow`: kept for the project, reached by nothing
    )
    report = launch.up(settings, options)
    cleanup.append(report.project)
    assert [a.role for a in report.agents] == ["orchestrator", "developer", "tester"]
    rules = ApiClient(settings).get("/v1/egress/rules", project=report.project)
    assert rules == [{"entry": "127.0.0.1:9", "origin": "up"}, {"entry": "pypi", "origin": "up"}]
    assert {a.briefing for a in report.agents} == {"delivered"}, report.agents
    # The project's state follows up, down and resume (and the orchestrator's report).
    assert _state(settings, report.project) in ("running", "complete")
    worktrees = project_repo.parent / f"{project_repo.name}-worktrees"
    assert sorted(p.name for p in worktrees.iterdir()) == ["developer", "orchestrator", "tester"]

    client = ApiClient(settings)
    # The demo developer commits on its own branch and reports done to the orchestrator.
    wait_until(
        lambda: int(git(project_repo, "rev-list", "--count", "main..agent/developer")),
        timeout_s=60,
        message="the developer's commit on agent/developer",
    )
    assert git(project_repo, "rev-parse", "main") == git(project_repo, "rev-parse", "HEAD")

    def completion_delivered() -> bool:
        return any(
            m["kind"] == "completion" and m["sender"] == "developer" and m["state"] == "delivered"
            for m in _messages(client, report.project)
        )

    wait_until(completion_delivered, timeout_s=60, message="the completion at the orchestrator")

    # A second up on the running project changes nothing.
    again = launch.up(settings, options)
    assert again.already_running

    # Schedule a check-in, stop the team before it is due, resume after: it arrives once.
    checkin = client.post(
        "/v1/checkins",
        {"project": report.project, "to": "tester", "minutes": 0.1, "note": "after the break"},
    )
    stopped = launch.down(settings, report.project)
    assert len(stopped) == 3
    assert _state(settings, report.project) == "stopped"
    wait_until(lambda: time.time() > checkin["due_at"] + 1, timeout_s=30, message="due time")
    launch.resume(settings, report.project, rebrief=True)  # `resume --rebrief`
    assert _state(settings, report.project) == "running"

    def checkin_delivered() -> list[dict]:
        return [
            m
            for m in _messages(client, report.project)
            if m["checkin_id"] == checkin["id"] and m["state"] == "delivered"
        ]

    delivered = wait_until(checkin_delivered, timeout_s=90, message="the check-in after resume")
    assert len(delivered) == 1

    def rebriefed() -> bool:
        briefings = [m for m in _messages(client, report.project) if m["kind"] == "briefing"]
        again = [m for m in briefings if m["body"].startswith(launch.REBRIEF_NOTE)]
        return len(briefings) == 6 and {m["state"] for m in again} == {"delivered"}

    wait_until(rebriefed, timeout_s=90, message="a second briefing delivered to every agent")
    from agentvisor.sandbox.sandboxes import SandboxBackend

    pane = SandboxBackend(settings).pane_history(report.project, "tester", lines=2000)
    assert pane.count(f"[{delivered[0]['marker']}]") == 1  # typed exactly once
    assert pane.count("after the break") == 1
    client.close()

    # destroy: sandboxes and home volumes go; with confirmation the worktrees too; branches stay.
    removed = launch.destroy(settings, report.project, remove_worktrees=True)
    assert any(name.endswith("-developer") for name in removed)
    assert SandboxBackend(settings).list(report.project) == []
    assert not any(worktrees.iterdir()) if worktrees.exists() else True
    assert "agent/developer" in git(project_repo, "branch", "--list", "agent/*")


def _state(settings: Settings, project: str) -> str:
    with ApiClient(settings) as client:
        return next(p["state"] for p in client.get("/v1/projects") if p["name"] == project)
