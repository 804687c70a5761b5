"""Agent profiles built from the environment."""

from __future__ import annotations

import pytest

from agent_shim.profiles import ProfileError, load_profile


def test_claude_runs_with_skip_permissions_by_default_and_resumes_with_continue():
    profile = load_profile("claude", {})
    assert profile.command == ("claude", "--dangerously-skip-permissions")
    assert profile.resume_command == ("claude", "--dangerously-skip-permissions", "--continue")
    assert profile.submit_keys == ("Enter",)


def test_claude_args_are_added_after_the_permission_flag_split_like_a_shell():
    profile = load_profile("claude", {"AGENTVISOR_CLAUDE_ARGS": "--model 'opus 4' --verbose"})
    assert profile.command == (
        "claude",
        "--dangerously-skip-permissions",
        "--model",
        "opus 4",
        "--verbose",
    )


def test_claude_args_that_choose_permissions_themselves_are_not_doubled():
    profile = load_profile("claude", {"AGENTVISOR_CLAUDE_ARGS": "--dangerously-skip-permissions"})
    assert profile.command == ("claude", "--dangerously-skip-permissions")
    profile = load_profile("claude", {"AGENTVISOR_CLAUDE_ARGS": "--permission-mode=plan"})
    assert profile.command == ("claude", "--permission-mode=plan")


def test_claude_permission_mode_other_than_bypass_is_passed_as_permission_mode():
    profile = load_profile("claude", {"AGENTVISOR_CLAUDE_PERMISSION_MODE": "acceptEdits"})
    assert profile.command == ("claude", "--permission-mode", "acceptEdits")


def test_unknown_claude_permission_mode_names_the_known_ones():
    with pytest.raises(ProfileError, match="acceptEdits, auto, bypassPermissions"):
        load_profile("claude", {"AGENTVISOR_CLAUDE_PERMISSION_MODE": "yolo"})


def test_claude_with_a_session_id_starts_that_session_and_resumes_exactly_it():
    session = "0b0c8a6e-35c5-4f7e-9a43-0f6a3c1f9d21"
    profile = load_profile("claude", {"AGENTVISOR_CLAUDE_SESSION_ID": session})
    assert profile.command == ("claude", "--dangerously-skip-permissions", "--session-id", session)
    assert profile.resume_command == (
        "claude",
        "--dangerously-skip-permissions",
        "--resume",
        session,
    )
    assert profile.turn_hooks


def test_claude_session_id_must_be_a_uuid():
    with pytest.raises(ProfileError, match="AGENTVISOR_CLAUDE_SESSION_ID"):
        load_profile("claude", {"AGENTVISOR_CLAUDE_SESSION_ID": "latest"})


def test_agent_command_overrides_any_profile_and_runs_through_sh():
    env = {"AGENTVISOR_AGENT_COMMAND": "my-cli --fast | tee log"}
    assert load_profile("claude", env).command == ("sh", "-c", "my-cli --fast | tee log")
    assert load_profile("demo", env).command == ("sh", "-c", "my-cli --fast | tee log")


def test_demo_runs_the_demo_agent_module():
    profile = load_profile("demo", {})
    assert profile.command == ("python3", "-m", "agent_shim.demo_agent")
    assert profile.ready_pattern == r"^demo> ?$"


def test_generic_needs_a_command_and_says_which_variable():
    with pytest.raises(ProfileError, match="AGENTVISOR_AGENT_COMMAND"):
        load_profile("generic", {"AGENTVISOR_READY_PATTERN": r"\$ $"})


def test_generic_needs_a_ready_pattern_and_says_which_variable():
    with pytest.raises(ProfileError, match="AGENTVISOR_READY_PATTERN"):
        load_profile("generic", {"AGENTVISOR_AGENT_COMMAND": "bash"})


def test_generic_rejects_a_broken_pattern_by_name():
    env = {"AGENTVISOR_AGENT_COMMAND": "bash", "AGENTVISOR_READY_PATTERN": "(unclosed"}
    with pytest.raises(ProfileError, match="AGENTVISOR_READY_PATTERN is not a valid"):
        load_profile("generic", env)


def test_generic_profile_from_environment():
    profile = load_profile(
        "generic",
        {
            "AGENTVISOR_AGENT_COMMAND": "aider --yes",
            "AGENTVISOR_READY_PATTERN": r"^> $",
            "AGENTVISOR_USAGE_LIMIT_PATTERN": "quota exceeded",
        },
    )
    assert profile.command == ("sh", "-c", "aider --yes")
    assert profile.ready_pattern == r"^> $"
    assert profile.usage_limit_pattern == "quota exceeded"


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ProfileError, match="claude, demo, generic"):
        load_profile("gpt", {})
