"""Agent profiles: how to start an agent CLI in its pane and how to read its screen.

Pure: `load_profile` takes the environment as a mapping, so the tests pass plain dicts.
"""

from __future__ import annotations

import re
import shlex
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace

# Claude Code's permission modes (2.1.330); the default skips every permission prompt, since
# the sandbox is the boundary.
DEFAULT_PERMISSION_MODE = "bypassPermissions"
PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "manual", "dontAsk", "plan")

# Claude Code's input box: `❯ ` or `> ` at the start of a line, maybe inside a `│` border.
# `❯ 1. Yes` is the cursor of a selection menu (trust dialog), not the input box.
CLAUDE_PROMPT = r"^\s*(?:[│|]\s*)?[❯>](?!\s*\d+\.)(?:\s|$)"
CLAUDE_BUSY = r"(?i)\besc to interrupt\b"
# The texts Claude Code shows when the subscription's usage runs out, e.g.
# `5-hour limit reached ∙ resets 3pm`, `Claude usage limit reached. Your limit will reset at
# 3pm (Europe/Paris).`, `Weekly limit reached ∙ resets Oct 6, 1pm`, `You've hit your limit`,
# `Claude AI usage limit reached|1760000000`, `You've hit your 5-hour limit · resets 10:48am (UTC)`
# (2.1.330).
USAGE_LIMIT = (
    r"(?i)(?:\busage limit reached"
    r"|\b(?:\d+[- ]hours?|weekly|daily|session|opus|sonnet)(?: usage)? limit reached"
    r"|\byou(?:'|’)ve (?:hit|reached) your (?:[\w-]+ ){0,2}limit\b)"
)


class ProfileError(ValueError):
    """The profile cannot be built from the environment; the message says what to set."""


@dataclass(frozen=True)
class Profile:
    """How one kind of agent CLI runs in the pane.

    Patterns are regular expressions searched (re.MULTILINE) in the last `tail_lines`
    non-empty lines of the visible screen, each line stripped of trailing blanks.
    """

    name: str
    command: tuple[str, ...]  # argv run in the pane (tmux execs it without a shell)
    ready_pattern: str  # the agent waits for input
    usage_limit_pattern: str | None  # the agent's plan ran out of usage
    submit_keys: tuple[str, ...] = ("Enter",)  # tmux key names sent after the text
    resume_command: tuple[str, ...] | None = None  # argv that continues after the CLI exited
    prompt_pattern: str | None = None  # a line of the input prompt; default `ready_pattern`
    busy_pattern: str | None = None  # seen while working even though the prompt is shown
    tail_lines: int = 6
    turn_hooks: bool = False  # the CLI reports its turns through `agent hook` (receipts.py)
    # Quiet time after typing before the submit key: TUIs that take an Enter right after a
    # paste as part of it (Claude Code) need it; a plain line reader does not.
    settle_s: float = 0.2

    @property
    def input_pattern(self) -> str:
        return self.prompt_pattern or self.ready_pattern


def _command_override(env: Mapping[str, str]) -> tuple[str, ...] | None:
    line = env.get("AGENTVISOR_AGENT_COMMAND", "").strip()
    return ("sh", "-c", line) if line else None


def claude_permission_args(env: Mapping[str, str]) -> tuple[str, ...]:
    """The permission flags of `claude` for AGENTVISOR_CLAUDE_PERMISSION_MODE."""
    mode = env.get("AGENTVISOR_CLAUDE_PERMISSION_MODE") or DEFAULT_PERMISSION_MODE
    if mode not in PERMISSION_MODES:
        raise ProfileError(
            f"AGENTVISOR_CLAUDE_PERMISSION_MODE={mode!r} is not a Claude Code permission mode; "
            f"use one of {', '.join(PERMISSION_MODES)}"
        )
    if mode == "bypassPermissions":
        return ("--dangerously-skip-permissions",)
    return ("--permission-mode", mode)


def claude_session_id(env: Mapping[str, str]) -> str | None:
    """The conversation's id the supervisor chose (AGENTVISOR_CLAUDE_SESSION_ID), if any."""
    raw = env.get("AGENTVISOR_CLAUDE_SESSION_ID", "").strip()
    if not raw:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ProfileError(
            f"AGENTVISOR_CLAUDE_SESSION_ID={raw!r} is not a UUID; Claude Code's --session-id "
            "needs one"
        ) from None


def claude_profile(env: Mapping[str, str]) -> Profile:
    """`claude` with the configured permission mode, then AGENTVISOR_CLAUDE_ARGS. With a
    session id it starts that conversation (`--session-id`) and resumes exactly it
    (`--resume`); without, it resumes the latest one in the folder (`--continue`)."""
    extra = shlex.split(env.get("AGENTVISOR_CLAUDE_ARGS", ""))
    permission = () if _names_permissions(extra) else claude_permission_args(env)
    args = (*permission, *extra)
    session_id = claude_session_id(env)
    if session_id:
        command = ("claude", *args, "--session-id", session_id)
        resume: tuple[str, ...] = ("claude", *args, "--resume", session_id)
    else:
        command, resume = ("claude", *args), ("claude", *args, "--continue")
    override = _command_override(env)
    return Profile(
        name="claude",
        command=override or command,
        ready_pattern=CLAUDE_PROMPT,
        usage_limit_pattern=USAGE_LIMIT,
        submit_keys=("Enter",),
        resume_command=override or resume,
        busy_pattern=CLAUDE_BUSY,
        tail_lines=6,
        turn_hooks=True,
    )


def _names_permissions(args: list[str]) -> bool:
    # Arguments that choose the permission mode themselves (set before there was a setting).
    return any(
        arg in ("--dangerously-skip-permissions", "--permission-mode")
        or arg.startswith("--permission-mode=")
        for arg in args
    )


def demo_profile(env: Mapping[str, str]) -> Profile:
    command = _command_override(env) or ("python3", "-m", "agent_shim.demo_agent")
    return Profile(
        name="demo",
        command=command,
        ready_pattern=r"^demo> ?$",
        usage_limit_pattern=USAGE_LIMIT,
        submit_keys=("Enter",),
        resume_command=command,
        prompt_pattern=r"^demo> ",
        tail_lines=1,
        settle_s=0.0,  # reads the paste as one block, then Enter
    )


def generic_profile(env: Mapping[str, str]) -> Profile:
    command = _command_override(env)
    if command is None:
        raise ProfileError(
            "the generic profile needs AGENTVISOR_AGENT_COMMAND, the agent CLI's command line"
        )
    ready = env.get("AGENTVISOR_READY_PATTERN", "")
    if not ready:
        raise ProfileError(
            "the generic profile needs AGENTVISOR_READY_PATTERN, a regular expression that "
            "matches the agent's prompt when it waits for input"
        )
    usage = env.get("AGENTVISOR_USAGE_LIMIT_PATTERN") or None
    for variable, pattern in (
        ("AGENTVISOR_READY_PATTERN", ready),
        ("AGENTVISOR_USAGE_LIMIT_PATTERN", usage),
    ):
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ProfileError(
                    f"{variable} is not a valid regular expression: {error}"
                ) from None
    return Profile(
        name="generic",
        command=command,
        ready_pattern=ready,
        usage_limit_pattern=usage,
        resume_command=command,
    )


PROFILES = {"claude": claude_profile, "demo": demo_profile, "generic": generic_profile}


def load_profile(name: str, env: Mapping[str, str]) -> Profile:
    """The profile called `name` (AGENTVISOR_PROFILE), configured from `env`.
    AGENTVISOR_TURN_HOOKS=1 (or 0) says whether the CLI reports its turns through
    `agent hook`, for any profile (Claude Code's does by default)."""
    try:
        build = PROFILES[name]
    except KeyError:
        raise ProfileError(
            f"unknown AGENTVISOR_PROFILE {name!r}; use one of {', '.join(PROFILES)}"
        ) from None
    profile = build(env)
    hooks = env.get("AGENTVISOR_TURN_HOOKS", "").strip()
    if hooks in ("0", "1"):
        profile = replace(profile, turn_hooks=hooks == "1")
    return profile
