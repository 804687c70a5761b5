"""The operator's MCP servers reach the agents' Claude Code: an MCP server listed in the state
dir's `mcp.json` (a stdio one, shipped with the tests) runs in the sandbox, the real Claude Code
TUI offers its tool to the (scripted) model, the model's call reaches it and its answer goes
back to the model. A server limited to another role is not there."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor import dry_run, server
from supervisor.config import Settings, load_settings
from supervisor.docker_engine import docker_client
from supervisor.errors import AgentvisorError
from supervisor.images import build_sandbox_image
from supervisor.launch import destroy, project_name
from supervisor.sandbox_policy import HOME
from supervisor.sandbox_spec import container_name
from tests.conftest import require
from tests.helpers import docker_answers, make_repo, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = os.environ.get("AGENTVISOR_CLAUDE_TEST_IMAGE", "agentvisor/sandbox:claude-test")
ECHO_SERVER = (Path(__file__).parents[1] / "data" / "mcp_echo_server.py").read_text()
SCRIPT = {
    "agents": {
        "developer": [
            {"tool": "mcp__echo__echo", "input": {"text": "ping-42"}},
            {"text": "The MCP server answered."},
        ]
    }
}


@pytest.fixture
def settings(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    require(docker_answers(), "a Docker engine")
    build_sandbox_image(tag=IMAGE, agent_clis="claude")
    home = short_tmp / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in [n for n in os.environ if n.startswith(("AGENTVISOR_", "ANTHROPIC_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AGENTVISOR_WATCHDOG_INTERVAL_S", "3600")
    return load_settings(short_tmp / "state", env={}, image=IMAGE, memory_mb=1536)


def test_an_mcp_server_from_the_state_dir_answers_the_agents_claude_code(
    short_tmp: Path, settings: Settings
):
    state = settings.state_dir
    state.mkdir(parents=True)
    (state / "mcp.json").write_text(
        json.dumps(
            {
                "mcpServers": {
                    "echo": {"command": "python3", "args": ["-c", ECHO_SERVER]},
                    "tester-only": {"command": "true", "roles": ["tester"]},
                }
            }
        )
    )
    repo = make_repo(
        short_tmp / f"mcp-{short_tmp.name[-6:].lower()}",
        "# MCP\n\nBuild a tool that echoes through an MCP server.\n",
    )
    script = short_tmp / "script.json"
    script.write_text(json.dumps(SCRIPT))
    name = project_name(repo)  # known before `up`: cleaned up whatever happens
    try:
        up = subprocess.run(
            [
                sys.executable,
                "-m",
                "supervisor",
                "--state",
                str(state),
                "up",
                str(repo / "spec.md"),
                "--roles",
                "developer",
                "--model",
                f"scripted:{script}",
                "--json",
            ],
            env={**os.environ, "AGENTVISOR_IMAGE": IMAGE, "AGENTVISOR_MEMORY_MB": "1536"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert up.returncode == 0, up.stderr[-3000:]
        assert json.loads(up.stdout)["project"] == name
        requests = dry_run.requests_file(settings, name)

        def developer_turns() -> list[dict]:
            lines = requests.read_text().splitlines() if requests.exists() else []
            turns = [json.loads(line) for line in lines]
            return [t for t in turns if t.get("conversation") and t.get("role") == "developer"]

        def answered() -> bool:
            # The MCP server's answer in a later request, as the tool's result.
            return any("mcp-echo: ping-42" in json.dumps(t["body"]) for t in developer_turns())

        wait_until(answered, timeout_s=120, message="the MCP tool's result back at the model")
        # Claude Code 2.1 lists MCP tools as deferred ones: named in a later turn's reminder.
        assert any("mcp__echo__echo" in json.dumps(t["body"]) for t in developer_turns())
        # What the shim wrote: the operator's server, not the one for testers only.
        container = docker_client().containers.get(container_name(name, "developer"))
        uid, gid = settings.sandbox_ids()
        config = container.exec_run(["cat", f"{HOME}/.claude.json"], user=f"{uid}:{gid}")
        assert config.exit_code == 0, config.output
        servers = json.loads(config.output)["mcpServers"]
        assert set(servers) == {"echo"} and servers["echo"]["command"] == "python3"
    finally:
        with contextlib.suppress(AgentvisorError):  # `up` may have failed before the project
            destroy(settings, name, remove_worktrees=True)
        dry_run.stop(settings, name)
        server.stop_server(settings)
