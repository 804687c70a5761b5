"""`up --budget` end to end with real Docker and the demo team: the budget given to `up` is the
project's, the broker enforces it on the agent's own token (the one in its sandbox's token
file), the agent is paused and the orchestrator told, and a second `up` with a higher budget
on the running project lets the agent go on. The model is the scripted server on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from agentvisor import launch
from agentvisor.client import ApiClient
from agentvisor.config import Settings, load_settings
from agentvisor.server import server_control
from agentvisor.testing.model_server import ModelServer
from tests.conftest import require
from tests.helpers import docker_answers, make_repo, sandbox_test_image, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SPEC = "# Budgeted\n\nA tiny library with a README; keep it dependency free.\n"


@pytest.fixture
def settings(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    require(docker_answers(), "a Docker engine")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVISOR_")}
    env["AGENTVISOR_DEMO_IMAGE"] = sandbox_test_image()
    for name in [k for k in os.environ if k.startswith(("AGENTVISOR_", "ANTHROPIC_"))]:
        monkeypatch.delenv(name)  # the server `up` starts inherits this process's environment
    return load_settings(short_tmp / "state", env=env, memory_mb=512)


def ask(settings: Settings, token: str) -> httpx.Response:
    """A model request as Claude Code in the sandbox sends it, on the API socket."""
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(settings.socket_path)),
        base_url="http://agentvisor",
        timeout=30,
    ) as http:
        return http.post(
            "/model/v1/messages",
            json={
                "model": "claude-sonnet-4-5",
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": "hello"}],
            },
            headers={"x-api-key": token, "anthropic-version": "2023-06-01"},
        )


def test_up_budget_is_enforced_by_the_broker_and_a_second_up_raises_it(
    short_tmp: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    repo = make_repo(short_tmp / f"budget-{short_tmp.name[-6:].lower()}", SPEC)
    with ModelServer([]) as model:
        monkeypatch.setenv("AGENTVISOR_MODEL_UPSTREAM", model.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-host-key-for-the-budget-test")
        options = launch.UpOptions(
            spec=repo / "spec.md",
            roles=("orchestrator", "developer"),
            agent="demo",
            wait_s=90,
            budget={"agent_tokens_per_day": 1, "project_hours": 10.0},
        )
        report = launch.up(settings, options)
        try:
            client = ApiClient(settings)
            usage = client.get("/v1/usage", project=report.project)
            assert usage["budget"] == {
                "agent_tokens_per_day": 1,
                "project_tokens": 0,
                "project_hours": 10.0,
            }
            token_file = settings.tokens_dir / report.project / "developer.token"
            token = token_file.read_text(encoding="utf-8").strip()

            assert ask(settings, token).status_code == 200  # spends the day's one token
            wait_until(
                lambda: any(
                    a["requests"] for a in client.get("/v1/usage", project=report.project)["agents"]
                ),
                timeout_s=10,
            )
            refused = ask(settings, token)
            assert refused.status_code == 429
            assert "agentvisor budget" in refused.json()["error"]["message"]
            assert len(model.requests) == 1
            agents = {a["role"]: a for a in client.get("/v1/agents", project=report.project)}
            assert agents["developer"]["paused_reason"].startswith("budget")
            notices = client.get("/v1/messages", project=report.project, recipient="orchestrator")
            assert any("Budget reached" in m["body"] for m in notices)

            # `up` again on the running project: the budget changes, the agent goes on.
            again = launch.up(settings, options.__class__(**{**vars(options), "budget": {
                "agent_tokens_per_day": 1_000_000}}))  # fmt: skip
            assert again.already_running
            assert ask(settings, token).status_code == 200
            assert len(model.requests) == 2
        finally:
            from agentvisor.sandbox.sandboxes import SandboxBackend

            SandboxBackend(settings).remove(report.project, volumes=True)
            server_control.stop_server(settings)
