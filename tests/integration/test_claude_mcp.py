"""The operator's MCP servers reach the agents' Claude Code: an MCP server listed in the state
dir's `mcp.json` (a stdio one, shipped with the tests) runs in the sandbox, the real Claude Code
TUI offers its tool to the (scripted) model, the model's call reaches it and its answer goes
back to the model. A server limited to another role is not there."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from agentvisor.config import Settings
from agentvisor.errors import AgentvisorError
from agentvisor.launch import destroy, project_name
from agentvisor.model import dry_run
from agentvisor.sandbox.docker_engine import docker_client
from agentvisor.sandbox.sandbox_policy import HOME
from agentvisor.sandbox.sandbox_spec import container_name
from agentvisor.server import server_control
from tests.conftest import CLAUDE_TEST_IMAGE
from tests.helpers import make_repo, scripted_up, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = CLAUDE_TEST_IMAGE
ECHO_SERVER = (Path(__file__).parents[1] / "data" / "mcp_echo_server.py").read_text()
SCRIPT = {
    "agents": {
        "developer": [
            {"tool": "mcp__echo__echo", "input": {"text": "ping-42"}},
            {"text": "The MCP server answered."},
        ]
    }
}


def test_an_mcp_server_from_the_state_dir_answers_the_agents_claude_code(
    short_tmp: Path, dry_run_host: Settings
):
    settings = dry_run_host
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
        up = scripted_up(settings, repo / "spec.md", ("developer",), script, IMAGE)
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
        server_control.stop_server(settings)
