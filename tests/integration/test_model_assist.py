"""Model assist end to end: `agentvisor plan SPEC --refine` and `up --refine` as a user types
them, a real server whose model upstream is the scripted model server on loopback (started
here, no real network), the request metered against the project's budget."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentvisor.testing.model_server import ModelServer
from tests.conftest import REPO, ServerProcess, require
from tests.helpers import docker_answers, make_repo, name_suffix, sandbox_test_image

KEY = "assist-test-key"
SPEC = """# Shop

Build a web app with a React frontend, a login form and a page per product for customers.
"""
TEAM = [
    {"role": "developer", "reason": "builds the React pages"},
    {"role": "orchestrator", "reason": "leads the team"},
    {"role": "security", "reason": "reviews the login form"},
]


def _propose(roles: list[dict[str, str]]) -> dict[str, Any]:
    return {"tool": "propose_team", "input": {"roles": roles, "summary": "small and safe"}}


def _env(home: Path, model_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTVISOR_", "ANTHROPIC_"))}
    env.update(HOME=str(home), PYTHONPATH=str(REPO))
    if model_url:
        env.update(ANTHROPIC_API_KEY=KEY, AGENTVISOR_MODEL_UPSTREAM=model_url)
    return env


def _server(tmp: Path, model_url: str | None) -> ServerProcess:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    server = ServerProcess(tmp / "state")
    server.env = _env(home, model_url)
    return server.start()


def _cli(server: ServerProcess, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "agentvisor", "--state", str(server.state_dir), *args]
    return subprocess.run(
        command, env={**server.env, **extra}, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def repo(short_tmp: Path) -> Path:
    return make_repo(short_tmp / f"shop-{name_suffix(short_tmp)}", SPEC)


def test_plan_refine_shows_the_models_team_with_reasons_and_counts_it(short_tmp: Path, repo: Path):
    script = {"agents": {"*": [_propose(TEAM), _propose(TEAM)]}}
    with ModelServer(script) as model:
        server = _server(short_tmp, model.url)
        try:
            done = _cli(server, "plan", str(repo / "spec.md"), "--refine")
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            assert (
                "Keyword team: orchestrator, project-manager, developer, tester, test-runner"
                in (lines)
            ), done.stdout
            assert "Refined team (3 agents, by the model):" in lines
            assert any(line.split()[:3] == ["1.", "orchestrator", "leads"] for line in lines)
            assert any("security" in line and "reviews the login form" in line for line in lines)
            # The host's credential went to the upstream, the spec as quoted data.
            [asked] = model.conversation()
            assert asked["credential_sha256"] == hashlib.sha256(KEY.encode()).hexdigest()
            assert "<spec>\n# Shop" in asked["body"]["messages"][0]["content"]

            name = repo.name
            usage = json.loads(_cli(server, "usage", name, "--json").stdout)
            [own] = [a for a in usage["agents"] if a["role"] == "agentvisor"]
            assert own["requests"] == 1 and own["tokens"] > 0
            assert usage["project_tokens"] == own["tokens"]

            # Once the project's budget is reached the model is not asked again.
            assert _cli(server, "budget", name, "--project-tokens", "1").returncode == 0
            again = _cli(server, "plan", str(repo / "spec.md"), "--refine")
            assert again.returncode == 0, again.stderr
            [note] = [line for line in again.stdout.splitlines() if "model assist" in line]
            assert "budget is reached" in note and "keyword team is used" in note
            assert len(model.conversation()) == 1
        finally:
            server.kill()


def test_plan_refine_falls_back_in_one_line_on_a_garbage_or_invalid_answer(
    short_tmp: Path, repo: Path
):
    bad_team = [{"role": "orchestrator", "reason": "x"}, {"role": "Root; rm -rf /", "reason": "y"}]
    script = {"agents": {"*": [{"text": "A team of ten, trust me."}, _propose(bad_team)]}}
    with ModelServer(script) as model:
        server = _server(short_tmp, model.url)
        try:
            for why in ("holds no team", "invalid role"):
                done = _cli(server, "plan", str(repo / "spec.md"), "--refine")
                assert done.returncode == 0, done.stderr
                notes = [line for line in done.stdout.splitlines() if "model assist" in line]
                assert len(notes) == 1 and why in notes[0], done.stdout
                assert "Refined team" not in done.stdout
                assert "  1. orchestrator" in done.stdout  # the keyword plan, as without it
        finally:
            server.kill()


def test_plan_refine_without_a_model_says_so_in_one_line(short_tmp: Path, repo: Path):
    server = _server(short_tmp, None)
    try:
        done = _cli(server, "plan", str(repo / "spec.md"), "--refine", "--json")
        assert done.returncode == 0, done.stderr
        plan = json.loads(done.stdout)
        assert plan["refinement"]["refined"] is None
        assert plan["refinement"]["fallback"].startswith("no model configured: the host has no")
        assert plan["refinement"]["roles"] == plan["roles"]
        text = _cli(server, "plan", str(repo / "spec.md"), "--refine")
        [note] = [line for line in text.stdout.splitlines() if "model assist" in line]
        assert "no model configured" in note and "Traceback" not in text.stderr
    finally:
        server.kill()


@pytest.mark.docker
@pytest.mark.slow
def test_up_refine_launches_the_models_team(short_tmp: Path, repo: Path):
    require(docker_answers(), "a Docker engine")
    team = [
        {"role": "orchestrator", "reason": "leads"},
        {"role": "developer", "reason": "builds it"},
    ]
    with ModelServer({"agents": {"*": [_propose(team)]}}) as model:
        server = _server(short_tmp, model.url)
        images = {"AGENTVISOR_DEMO_IMAGE": sandbox_test_image(), "AGENTVISOR_MEMORY_MB": "512"}
        try:
            done = _cli(server, "up", str(repo / "spec.md"), "--refine", "--agent", "demo",
                        "--json", **images)  # fmt: skip
            assert done.returncode == 0, done.stderr
            report = json.loads(done.stdout)
            assert [a["role"] for a in report["agents"]] == ["orchestrator", "developer"]
            assert report["refinement"]["refined"]["roles"] == ["orchestrator", "developer"]
            assert "model assist: refined team" in done.stderr  # the progress line
            usage = json.loads(_cli(server, "usage", report["project"], "--json").stdout)
            assert {a["role"] for a in usage["agents"]} == {
                "orchestrator",
                "developer",
                "agentvisor",
            }
        finally:
            _cli(server, "destroy", repo.name, "--yes", **images)
            server.kill()
