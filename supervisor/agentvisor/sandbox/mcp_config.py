"""MCP servers for the agents' Claude Code (the old tool's `--global-mcp-init`), from the
operator's side only: `STATE/mcp.json` for every project, `STATE/mcp/PROJECT.json` on top of it
for one, both in Claude Code's own format (`{"mcpServers": {NAME: {...}}}`), never from a file
in the project. An entry may add `"roles": [...]` to reach only those agents.

The chosen servers reach the sandbox as `AGENTVISOR_MCP_SERVERS` (JSON), which the shim writes
into the agent's `~/.claude.json` (agent_shim/claude_setup.py). A server that runs as a
command runs inside the sandbox; a remote one (`"type": "http"` or `"sse"`, a `url`) is
reached through the egress proxy, so its host must be allowed. Whatever an entry holds goes
into the sandbox: `headers` (a remote server's credentials) are refused, and no secret belongs
in `env`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from agentvisor.config import Settings
from agentvisor.errors import InvalidInput

ENV_VAR = "AGENTVISOR_MCP_SERVERS"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
REMOTE_TYPES = ("http", "sse")
STDIO_KEYS = {"type", "command", "args", "env", "roles"}
REMOTE_KEYS = {"type", "url", "roles"}


def config_files(settings: Settings, project: str) -> list[Path]:
    return [settings.state_dir / "mcp.json", settings.state_dir / "mcp" / f"{project}.json"]


def servers_for(settings: Settings, project: str, role: str) -> dict[str, dict[str, Any]]:
    """The MCP servers of `role` in `project`: the state dir's, then the project's own over
    them (same name: the project's wins), those limited to other roles left out."""
    chosen: dict[str, dict[str, Any]] = {}
    for path in config_files(settings, project):
        if path.is_file():
            for name, server in read_servers(path).items():
                roles = server.get("roles")
                if roles is None or role in roles:
                    chosen[name] = {k: v for k, v in server.items() if k != "roles"}
                else:
                    chosen.pop(name, None)
    return chosen


def read_servers(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"{path}: cannot read MCP servers ({exc}); fix or remove it") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise InvalidInput(
            f'{path}: write {{"mcpServers": {{"NAME": {{...}}}}}}, as Claude Code does'
        )
    return {str(name): check_server(path, name, server) for name, server in servers.items()}


def check_server(path: Path, name: Any, server: Any) -> dict[str, Any]:
    where = f"{path}: MCP server {name!r}"
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(f"{where}: a name is letters, digits, '-' or '_' (64 at most)")
    if not isinstance(server, dict):
        raise InvalidInput(f"{where}: must be an object like {{'command': 'npx', 'args': [...]}}")
    if "headers" in server:
        raise InvalidInput(
            f"{where}: 'headers' would put a credential into every sandbox; agentvisor holds no "
            "MCP credentials yet, so use a server that needs none, or run it as a command"
        )
    kind = server.get("type", "stdio")
    if kind != "stdio" and kind not in REMOTE_TYPES:
        raise InvalidInput(f"{where}: 'type' is stdio, http or sse, not {kind!r}")
    allowed = REMOTE_KEYS if kind in REMOTE_TYPES else STDIO_KEYS
    unknown = sorted(set(server) - allowed)
    if unknown:
        raise InvalidInput(f"{where}: unknown key(s) {', '.join(unknown)}")
    if kind in REMOTE_TYPES:
        url = server.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise InvalidInput(f"{where}: a remote server needs 'url': 'https://...'")
    else:
        if not isinstance(server.get("command"), str) or not server["command"]:
            raise InvalidInput(f"{where}: needs 'command' (or 'type': 'http' with a 'url')")
        args = server.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise InvalidInput(f"{where}: 'args' is a list of strings")
        env = server.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise InvalidInput(f"{where}: 'env' maps names to strings")
    roles = server.get("roles")
    if roles is not None and (
        not isinstance(roles, list) or not all(isinstance(r, str) for r in roles)
    ):
        raise InvalidInput(f"{where}: 'roles' is a list of role names")
    return dict(server)


def sandbox_env(servers: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The sandbox's variable for the shim; none when there are no servers."""
    return {ENV_VAR: json.dumps(servers, sort_keys=True)} if servers else {}
