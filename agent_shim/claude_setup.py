"""Claude Code's state in the agent's home, prepared by the shim before it starts `claude`, so
that a new sandbox opens straight at the input box: onboarding done, the workspace trusted, the
stand-in API key approved (the agent's token: the host's model broker exchanges it for the real
credential), the permission mode's warning accepted, hooks that report each turn through
`agent hook`. The keys are those Claude Code 2.1.330 writes.

The seeding functions are pure (dict in, dict out); `prepare` reads and writes the files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_shim.profiles import Profile, claude_session_id
from agent_shim.receipts import HOOK_EVENTS

log = logging.getLogger("agent_shim")

HOOK_COMMAND = "agent hook "  # + the receipt kind; how our own hook entries are recognised
HOOK_TIMEOUT_S = 10
API_KEY_SUFFIX_CHARS = 20  # Claude Code remembers an approved key by its last 20 characters
# Set in Claude Code's own settings unless the user's settings say otherwise: the image is
# read-only and its version pinned, so the auto-updater has nothing to do.
SETTINGS_ENV = {"DISABLE_AUTOUPDATER": "1"}
CREDENTIALS_STAMP = ".agentvisor-credentials.sha256"  # agentvisor 0.1 copied the login in
MCP_ENV = "AGENTVISOR_MCP_SERVERS"  # the operator's MCP servers for this agent (JSON)
MCP_STAMP = ".agentvisor-mcp.json"  # in ~/.claude: the names of the servers agentvisor wrote


@dataclass(frozen=True)
class ClaudeSetup:
    written: tuple[str, ...]  # the files changed, for the log
    session_id: str | None
    resume: bool  # start by resuming the conversation rather than a new one


# --- pure seeding ------------------------------------------------------------------------------


def seed_global_config(data: Mapping[str, Any], workdir: str, api_key: str | None) -> dict:
    """`~/.claude.json` with onboarding done, `workdir` trusted and `api_key` approved."""
    seeded = copy.deepcopy(dict(data))
    seeded["hasCompletedOnboarding"] = True
    seeded["hasSeenAutoDefaultNotice"] = True  # a notice about the default permission mode
    projects = seeded.get("projects")
    if not isinstance(projects, dict):
        projects = seeded["projects"] = {}
    project = projects.get(workdir)
    if not isinstance(project, dict):
        project = projects[workdir] = {}
    project["hasTrustDialogAccepted"] = True
    if api_key:
        responses = seeded.get("customApiKeyResponses")
        if not isinstance(responses, dict):
            responses = seeded["customApiKeyResponses"] = {}
        suffix = api_key[-API_KEY_SUFFIX_CHARS:]
        approved = [k for k in responses.get("approved") or [] if isinstance(k, str)]
        rejected = [k for k in responses.get("rejected") or [] if isinstance(k, str)]
        responses["approved"] = approved if suffix in approved else [*approved, suffix]
        responses["rejected"] = [k for k in rejected if k != suffix]
    return seeded


def seed_mcp_servers(
    data: Mapping[str, Any], servers: Mapping[str, Any], ours_before: list[str]
) -> dict:
    """`~/.claude.json` with the operator's MCP servers (user scope: no approval prompt) in
    `mcpServers`: those agentvisor wrote before and no longer lists go, the agent's own stay."""
    seeded = copy.deepcopy(dict(data))
    current = seeded.get("mcpServers")
    own = {
        k: v
        for k, v in (current.items() if isinstance(current, dict) else ())
        if k not in ours_before
    }
    merged = {**own, **copy.deepcopy(dict(servers))}
    if merged:
        seeded["mcpServers"] = merged
    else:
        seeded.pop("mcpServers", None)
    return seeded


def mcp_servers_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    raw = env.get(MCP_ENV)
    if not raw:
        return {}
    try:
        servers = json.loads(raw)
    except ValueError:
        log.warning("%s is not JSON; no MCP servers written", MCP_ENV)
        return {}
    return servers if isinstance(servers, dict) else {}


def hook_entries() -> dict[str, list[dict[str, Any]]]:
    """Our hooks, by Claude Code's event name: each runs `agent hook KIND`."""
    return {
        event: [
            {
                "hooks": [
                    {"type": "command", "command": HOOK_COMMAND + kind, "timeout": HOOK_TIMEOUT_S}
                ]
            }
        ]
        for kind, event in HOOK_EVENTS.items()
    }


def _is_ours(group: Any) -> bool:
    hooks = group.get("hooks") if isinstance(group, dict) else None
    if not isinstance(hooks, list) or not hooks:
        return False
    return all(
        isinstance(h, dict) and str(h.get("command", "")).startswith(HOOK_COMMAND) for h in hooks
    )


def seed_settings(data: Mapping[str, Any], bypass_permissions: bool) -> dict:
    """`~/.claude/settings.json` with our hooks (the user's own kept beside them), the
    auto-updater off, and the bypass-permissions warning accepted when that mode is used."""
    seeded = copy.deepcopy(dict(data))
    hooks = seeded.get("hooks")
    if not isinstance(hooks, dict):
        hooks = seeded["hooks"] = {}
    for event, ours in hook_entries().items():
        groups = hooks.get(event)
        kept = [g for g in groups if not _is_ours(g)] if isinstance(groups, list) else []
        hooks[event] = [*kept, *ours]
    env = seeded.get("env")
    if not isinstance(env, dict):
        env = seeded["env"] = {}
    for key, value in SETTINGS_ENV.items():
        env.setdefault(key, value)
    if bypass_permissions:
        seeded["skipDangerousModePermissionPrompt"] = True
    return seeded


def uses_bypass_permissions(profile: Profile) -> bool:
    return any(
        "--dangerously-skip-permissions" in arg or "bypassPermissions" in arg
        for arg in profile.command
    )


# --- files -------------------------------------------------------------------------------------


def prepare(profile: Profile, env: Mapping[str, str], home: Path) -> ClaudeSetup:
    """Seed Claude Code's files in `home` for `profile`; say whether to resume the session."""
    workdir = env.get("AGENTVISOR_WORKDIR", "/workspace")
    written = []
    config = home / ".claude.json"
    if _update_json(
        config, lambda data: seed_global_config(data, workdir, env.get("ANTHROPIC_API_KEY"))
    ):
        written.append(str(config))
    settings = home / ".claude" / "settings.json"
    bypass = uses_bypass_permissions(profile)
    if _update_json(settings, lambda data: seed_settings(data, bypass)):
        written.append(str(settings))
    stamp = home / ".claude" / MCP_STAMP
    servers = mcp_servers_from_env(env)
    ours_before = _names(stamp)
    if servers or ours_before:
        if _update_json(config, lambda data: seed_mcp_servers(data, servers, ours_before)):
            written.append(f"{config} (MCP servers: {', '.join(sorted(servers)) or 'none'})")
        _write_atomic(stamp, json.dumps(sorted(servers)).encode())
    if forget_copied_login(home / ".claude"):
        written.append(str(home / ".claude" / ".credentials.json"))
    session_id = claude_session_id(env)
    if session_id:
        resume = transcript_exists(home, session_id)
    else:
        resume = env.get("AGENTVISOR_RESUME") == "1"
    return ClaudeSetup(tuple(written), session_id, resume)


def _names(stamp: Path) -> list[str]:
    try:
        names = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def transcript_exists(home: Path, session_id: str) -> bool:
    """Whether Claude Code saved a conversation with this id (it does at the first prompt):
    `--resume` needs one, `--session-id` refuses one."""
    projects = home / ".claude" / "projects"
    return any(projects.glob(f"*/{session_id}.jsonl"))


def forget_copied_login(claude_dir: Path) -> bool:
    """Delete the copy of the host's Claude Code login that agentvisor 0.1 made in the home
    volume (its stamp file says it was ours): the login stays on the host now, with the broker,
    and Claude Code uses the stand-in key."""
    stamp = claude_dir / CREDENTIALS_STAMP
    if not stamp.exists():
        return False
    with contextlib.suppress(FileNotFoundError):
        (claude_dir / ".credentials.json").unlink()
    stamp.unlink()
    log.info("deleted the copy of the host's Claude Code login in %s", claude_dir)
    return True


def _update_json(path: Path, seed: Any) -> bool:
    """Apply `seed` to the JSON object in `path`; write only when it changes. A file that is
    not a JSON object is kept aside (`.corrupt-<time>`) and replaced."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    data: Any = {}
    if text is not None:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.warning("%s is not a JSON object; kept as %s and written anew", path, aside)
            os.replace(path, aside)
            data = {}
    seeded = seed(data)
    if text is not None and seeded == data:
        return False
    _write_atomic(path, (json.dumps(seeded, indent=2, ensure_ascii=False) + "\n").encode())
    return True


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
