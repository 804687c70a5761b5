"""What a Claude Code sandbox takes from the host: the API key or the host's Claude Code login,
the permission mode, and the conversation's session id. Pure but for reading the host's
environment and home (docs/guides/claude-code.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.config import Settings
from supervisor.errors import InvalidInput
from supervisor.mounts import Mount

# Claude Code 2.1.330's --permission-mode choices (agent_shim/profiles.py knows them too).
PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "manual", "dontAsk", "plan")
# The host's login, mounted read-only; the shim copies it into ~/.claude so that Claude Code
# can refresh its token (a mount deeper in the home would make root-owned folders there).
CREDENTIALS_TARGET = "/mnt/agentvisor/claude-credentials.json"
# Host variables handed to every Claude Code sandbox when set: credentials, an API endpoint
# (a gateway, or the scripted model server of a dry run), the model, and the opt-outs.
PASSTHROUGH_ENV = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_MODEL",
    "ANTHROPIC_SMALL_FAST_MODEL",
    "DISABLE_TELEMETRY",
    "DISABLE_ERROR_REPORTING",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
)


@dataclass(frozen=True)
class SandboxExtras:
    """What `build_spec` adds for one agent: environment and read-only credential mounts."""

    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()


def check_permission_mode(mode: str) -> str:
    if mode not in PERMISSION_MODES:
        raise InvalidInput(
            f"claude_permission_mode '{mode}' is not a Claude Code permission mode; use one of "
            + ", ".join(PERMISSION_MODES)
        )
    return mode


def sandbox_extras(
    settings: Settings,
    profile: str,
    session_id: str | None,
    host_env: Mapping[str, str] | None = None,
    host_home: Path | None = None,
) -> SandboxExtras:
    """The environment and mounts of a `profile` sandbox whose conversation is `session_id`:
    nothing for profiles other than claude."""
    if profile != "claude":
        return SandboxExtras()
    host_env = os.environ if host_env is None else host_env
    home = host_home or Path(host_env.get("HOME") or Path.home()).expanduser()
    env = {
        "AGENTVISOR_CLAUDE_PERMISSION_MODE": check_permission_mode(settings.claude_permission_mode)
    }
    if session_id:
        env["AGENTVISOR_CLAUDE_SESSION_ID"] = session_id
    env.update({k: host_env[k] for k in PASSTHROUGH_ENV if host_env.get(k)})
    mounts: tuple[Mount, ...] = ()
    credentials = home / ".claude" / ".credentials.json"
    if credentials.is_file():
        mounts = (Mount(credentials, Path(CREDENTIALS_TARGET), True),)
        env["AGENTVISOR_CLAUDE_CREDENTIALS"] = CREDENTIALS_TARGET
    return SandboxExtras(env, mounts)
