"""What a Claude Code sandbox takes from the host: the permission mode, the conversation's
session id, and the model broker's address (never a credential). Pure but for reading the
host's environment (docs/guides/claude-code.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from agentvisor.config import Settings
from agentvisor.errors import InvalidInput
from agentvisor.sandbox.mounts import Mount

# Claude Code 2.1.330's --permission-mode choices (agent_shim/profiles.py knows them too).
PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "manual", "dontAsk", "plan")
# The model API as a sandbox sees it: the host API's model broker through the shim's relay
# (agentvisor.server.api.model). The stand-in key is the agent's own token, set by the shim.
MODEL_BASE_URL = "http://127.0.0.1:7399/model"
# Host variables handed to every Claude Code sandbox when set: the model and the opt-outs.
# Never a credential or an endpoint: those stay with the broker on the host.
PASSTHROUGH_ENV = (
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
) -> SandboxExtras:
    """The environment of a `profile` sandbox whose conversation is `session_id`: nothing for
    profiles other than claude. No credential: the broker holds the host's."""
    if profile != "claude":
        return SandboxExtras()
    host_env = os.environ if host_env is None else host_env
    env = {
        "AGENTVISOR_CLAUDE_PERMISSION_MODE": check_permission_mode(settings.claude_permission_mode),
        "AGENTVISOR_MODEL_BROKER": "1",
        "ANTHROPIC_BASE_URL": MODEL_BASE_URL,
    }
    if session_id:
        env["AGENTVISOR_CLAUDE_SESSION_ID"] = session_id
    env.update({k: host_env[k] for k in PASSTHROUGH_ENV if host_env.get(k)})
    return SandboxExtras(env)
