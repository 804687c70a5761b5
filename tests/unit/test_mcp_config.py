"""The operator's MCP servers: which agent gets which, what is refused, and how the shim
merges them into Claude Code's own file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_shim.claude_setup import seed_mcp_servers
from agentvisor.config import Settings
from agentvisor.errors import InvalidInput
from agentvisor.sandbox.mcp_config import sandbox_env, servers_for


def write(path: Path, servers: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"mcpServers": servers}))


def test_the_projects_own_file_goes_over_the_state_dirs_and_roles_limit_a_server(tmp_path: Path):
    settings = Settings(state_dir=tmp_path)
    write(tmp_path / "mcp.json", {"fs": {"command": "fs"}, "db": {"command": "db-all"}})
    write(
        tmp_path / "mcp" / "shop.json",
        {
            "db": {"command": "db-shop", "roles": ["developer"]},
            "web": {"type": "http", "url": "https://mcp.example.test/mcp"},
        },
    )
    assert servers_for(settings, "shop", "developer") == {
        "fs": {"command": "fs"},
        "db": {"command": "db-shop"},
        "web": {"type": "http", "url": "https://mcp.example.test/mcp"},
    }
    assert set(servers_for(settings, "shop", "tester")) == {"fs", "web"}  # no db at all
    assert servers_for(settings, "other", "tester") == {
        "fs": {"command": "fs"},
        "db": {"command": "db-all"},
    }
    assert json.loads(sandbox_env({"fs": {"command": "fs"}})["AGENTVISOR_MCP_SERVERS"]) == {
        "fs": {"command": "fs"}
    }
    assert sandbox_env({}) == {}


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"type": "http", "url": "https://x.test", "headers": {"Authorization": "x"}}, "headers"),
        ({"args": ["x"]}, "needs 'command'"),
        ({"command": "x", "args": "a b"}, "'args' is a list"),
        ({"type": "http"}, "needs 'url'"),
        ({"command": "x", "roles": "developer"}, "'roles' is a list"),
        ({"command": "x", "cwd": "/"}, "unknown key"),
        ({"type": "ws", "url": "wss://x"}, "'type' is stdio, http or sse"),
    ],
)
def test_bad_servers_are_refused_with_what_to_fix(tmp_path: Path, server: dict, message: str):
    write(tmp_path / "mcp.json", {"bad": server})
    with pytest.raises(InvalidInput, match=message):
        servers_for(Settings(state_dir=tmp_path), "p", "developer")


def test_the_shim_replaces_the_servers_it_wrote_and_keeps_the_agents_own():
    data = {"mcpServers": {"old": {"command": "gone"}, "mine": {"command": "agent's"}}}
    seeded = seed_mcp_servers(data, {"new": {"command": "n"}}, ours_before=["old"])
    assert seeded["mcpServers"] == {"mine": {"command": "agent's"}, "new": {"command": "n"}}
    assert "mcpServers" not in seed_mcp_servers({"mcpServers": {"old": {}}}, {}, ["old"])
