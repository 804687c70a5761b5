"""Claude Code's files seeded in the agent's home before it starts, the hook receipts that tell
its turns, `agent hook`, and what the host hands a Claude Code sandbox."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest

from agent_shim import agent_cli, claude_setup
from agent_shim.client import ApiClient
from agent_shim.profiles import load_profile
from agent_shim.receipts import Receipts, TurnState, fold_all, receipt
from agentvisor.config import Settings
from agentvisor.errors import InvalidInput
from agentvisor.sandbox.claude import MODEL_BASE_URL, sandbox_extras

SESSION = "5d1c2f7a-8b9e-4c3d-a2f1-0e9d8c7b6a54"
API_KEY = "sk-ant-api03-0123456789abcdefghijKLMNOPQRSTUVWXYZ"


def claude_env(**extra: str) -> dict[str, str]:
    return {"AGENTVISOR_WORKDIR": "/workspace", "AGENTVISOR_CLAUDE_SESSION_ID": SESSION, **extra}


def prepare(home: Path, **extra: str) -> claude_setup.ClaudeSetup:
    env = claude_env(**extra)
    return claude_setup.prepare(load_profile("claude", env), env, home)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


# --- seeding ------------------------------------------------------------------------------------


def test_fresh_home_starts_at_the_input_box_onboarded_trusted_key_approved(tmp_path: Path):
    setup = prepare(tmp_path, ANTHROPIC_API_KEY=API_KEY)

    config = read(tmp_path / ".claude.json")
    assert config["hasCompletedOnboarding"] is True
    assert config["projects"]["/workspace"]["hasTrustDialogAccepted"] is True
    assert config["customApiKeyResponses"]["approved"] == [API_KEY[-20:]]
    settings = read(tmp_path / ".claude" / "settings.json")
    assert settings["skipDangerousModePermissionPrompt"] is True
    assert settings["env"]["DISABLE_AUTOUPDATER"] == "1"
    assert (tmp_path / ".claude.json").stat().st_mode & 0o777 == 0o600
    assert setup.session_id == SESSION and setup.resume is False


def test_hooks_report_each_turn_through_the_agent_command(tmp_path: Path):
    prepare(tmp_path)

    hooks = read(tmp_path / ".claude" / "settings.json")["hooks"]
    commands = {event: groups[0]["hooks"][0]["command"] for event, groups in hooks.items()}
    assert commands == {
        "SessionStart": "agent hook session_start",
        "UserPromptSubmit": "agent hook prompt_submitted",
        "Stop": "agent hook stop",
        "StopFailure": "agent hook stop_failure",
        "Notification": "agent hook notification",
    }


def test_what_claude_code_and_the_user_wrote_is_kept_and_a_second_run_writes_nothing(
    tmp_path: Path,
):
    (tmp_path / ".claude").mkdir()
    user_hook = {"hooks": [{"type": "command", "command": "notify-send done"}]}
    (tmp_path / ".claude" / "settings.json").write_text(
        json.dumps({"model": "opus", "hooks": {"Stop": [user_hook]}, "env": {"X": "1"}})
    )
    (tmp_path / ".claude.json").write_text(
        json.dumps({"numStartups": 7, "projects": {"/workspace": {"allowedTools": ["Bash"]}}})
    )

    first = prepare(tmp_path)
    second = prepare(tmp_path)

    settings = read(tmp_path / ".claude" / "settings.json")
    assert settings["model"] == "opus" and settings["env"] == {"X": "1", "DISABLE_AUTOUPDATER": "1"}
    assert settings["hooks"]["Stop"][0] == user_hook
    assert [g["hooks"][0]["command"] for g in settings["hooks"]["Stop"]] == [
        "notify-send done",
        "agent hook stop",
    ]
    config = read(tmp_path / ".claude.json")
    assert config["numStartups"] == 7
    assert config["projects"]["/workspace"] == {
        "allowedTools": ["Bash"],
        "hasTrustDialogAccepted": True,
    }
    assert len(first.written) == 2 and second.written == ()


def test_a_rejected_key_is_approved_and_no_key_leaves_the_responses_alone():
    rejected = {"customApiKeyResponses": {"approved": [], "rejected": [API_KEY[-20:]]}}
    seeded = claude_setup.seed_global_config(rejected, "/workspace", API_KEY)
    assert seeded["customApiKeyResponses"] == {"approved": [API_KEY[-20:]], "rejected": []}
    assert "customApiKeyResponses" not in claude_setup.seed_global_config({}, "/w", None)


def test_other_permission_modes_do_not_accept_the_bypass_warning(tmp_path: Path):
    prepare(tmp_path, AGENTVISOR_CLAUDE_PERMISSION_MODE="acceptEdits")
    assert "skipDangerousModePermissionPrompt" not in read(tmp_path / ".claude" / "settings.json")


def test_a_broken_settings_file_is_kept_aside_and_written_anew(tmp_path: Path):
    (tmp_path / ".claude.json").write_text("{ not json")

    prepare(tmp_path)

    assert read(tmp_path / ".claude.json")["hasCompletedOnboarding"] is True
    assert [p.name.split(".corrupt-")[0] for p in tmp_path.glob(".claude.json.corrupt-*")] == [
        ".claude.json"
    ]


def test_the_session_is_resumed_once_claude_code_saved_it(tmp_path: Path):
    assert prepare(tmp_path).resume is False
    transcript = tmp_path / ".claude" / "projects" / "-workspace" / f"{SESSION}.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_text("{}\n")
    assert prepare(tmp_path).resume is True


def test_without_a_session_id_resume_follows_agentvisor_resume(tmp_path: Path):
    env = {"AGENTVISOR_RESUME": "1"}
    assert claude_setup.prepare(load_profile("claude", env), env, tmp_path).resume is True
    assert claude_setup.prepare(load_profile("claude", {}), {}, tmp_path).resume is False


def test_a_login_copied_in_by_agentvisor_0_1_is_deleted_and_the_stand_in_approved(
    tmp_path: Path,
):
    home = tmp_path / "home"
    claude_dir = home / ".claude"
    claude_dir.mkdir(parents=True)
    (claude_dir / ".credentials.json").write_text('{"claudeAiOauth": {"accessToken": "a1"}}')
    (claude_dir / claude_setup.CREDENTIALS_STAMP).write_text("digest\n")
    stand_in = "avt_agent-token-0123456789abcdefghijklmnop"

    setup = prepare(home, ANTHROPIC_API_KEY=stand_in)

    assert not (claude_dir / ".credentials.json").exists()
    assert not (claude_dir / claude_setup.CREDENTIALS_STAMP).exists()
    assert str(claude_dir / ".credentials.json") in setup.written
    approved = read(home / ".claude.json")["customApiKeyResponses"]["approved"]
    assert approved == [stand_in[-20:]]


def test_a_login_claude_code_wrote_itself_is_left_alone(tmp_path: Path):
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / ".credentials.json").write_text("{}")
    prepare(home)
    assert (home / ".claude" / ".credentials.json").exists()


# --- receipts -----------------------------------------------------------------------------------


def test_a_prompt_opens_a_turn_and_stop_or_failure_closes_it():
    prompt = receipt("prompt_submitted", {"prompt": "[av-1z3k] do it", "prompt_id": "p"}, 10.0)
    assert prompt["marker"] == "av-1z3k"

    state = fold_all([receipt("session_start", {}, 1.0), prompt])
    assert state.in_turn and state.turn_started_at == 10.0 and state.was_submitted("av-1z3k")
    notified = fold_all([receipt("notification", {"message": "needs permission"}, 11.0)], state)
    assert notified.attention == "needs permission"
    assert not fold_all([receipt("stop", {}, 12.0)], notified).in_turn
    failed = fold_all([receipt("stop_failure", {"error": "rate_limit"}, 12.0)], state)
    assert not failed.in_turn
    assert failed.was_submitted("av-1z3k")


def test_a_restarted_cli_closes_the_turn_it_left_open():
    state = fold_all(
        [receipt("prompt_submitted", {"prompt": "x"}, 1.0), receipt("session_start", {}, 2.0)]
    )
    assert not state.in_turn


def test_receipts_file_is_read_incrementally_and_a_partial_line_waits(tmp_path: Path):
    path = tmp_path / "hooks.jsonl"
    reader = Receipts(path)
    assert reader.refresh() == TurnState()
    line = json.dumps(receipt("prompt_submitted", {"prompt": "[av-9] hi"}, 1.0))
    path.write_text(line + "\n" + '{"kind": "st')
    assert reader.refresh().in_turn

    with path.open("a") as file:
        file.write('op", "at": 2.0}\n')
    assert not reader.refresh().in_turn
    path.write_text("")  # a new file: read from its start
    assert reader.refresh() == TurnState()


# --- agent hook ---------------------------------------------------------------------------------


def test_agent_hook_writes_its_receipt_and_exits_0_when_the_server_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    receipts_file = tmp_path / "hooks.jsonl"
    token = tmp_path / "token"
    token.write_text("ava_x\n")
    monkeypatch.setenv("AGENTVISOR_HOOK_RECEIPTS", str(receipts_file))
    monkeypatch.setenv("AGENTVISOR_SOCKET", str(tmp_path / "no.sock"))
    monkeypatch.setenv("AGENTVISOR_TOKEN_FILE", str(token))
    payload = {"hook_event_name": "UserPromptSubmit", "prompt": "[av-abc] " + "x" * 5000}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(payload)))

    assert agent_cli.main(["hook", "prompt_submitted"]) == 0

    (line,) = [json.loads(raw) for raw in receipts_file.read_text().splitlines()]
    assert line["kind"] == "prompt_submitted" and line["marker"] == "av-abc"
    assert len(line["prompt_head"]) == 200
    assert "event not recorded" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["hook"], ["hook", "Weird Kind!", "extra"]])
def test_agent_hook_never_fails_on_odd_arguments_or_input(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AGENTVISOR_HOOK_RECEIPTS", str(tmp_path / "hooks.jsonl"))
    monkeypatch.setenv("AGENTVISOR_SOCKET", str(tmp_path / "no.sock"))
    monkeypatch.setattr("sys.stdin", io.StringIO("not json"))
    assert agent_cli.main(argv) == 0


def test_agent_hook_posts_the_receipt_as_an_event(tmp_path: Path):
    posted = []

    class Recorder(ApiClient):
        def event(self, kind, data=None):
            posted.append((kind, data))
            return {}

    line = agent_cli.run_hook(
        "stop", '{"last_assistant_message": "done"}', {}, Recorder(str(tmp_path / "s")), 5.0
    )
    assert posted == [("hook_stop", line)] and line["last_message"] == "done"


# --- the host side ------------------------------------------------------------------------------


def test_claude_sandbox_gets_session_permission_mode_and_the_broker_never_a_credential():
    host_env = {
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_AUTH_TOKEN": "a-token",
        "ANTHROPIC_BASE_URL": "https://gateway.example",
        "ANTHROPIC_MODEL": "opus",
        "UNRELATED": "x",
    }
    session = str(uuid.uuid4())

    extras = sandbox_extras(Settings(), "claude", session, host_env)

    assert extras.env == {
        "AGENTVISOR_CLAUDE_PERMISSION_MODE": "bypassPermissions",
        "AGENTVISOR_CLAUDE_SESSION_ID": session,
        "AGENTVISOR_MODEL_BROKER": "1",
        "ANTHROPIC_BASE_URL": MODEL_BASE_URL,
        "ANTHROPIC_MODEL": "opus",
    }
    assert extras.mounts == ()


def test_other_profiles_get_nothing_and_a_wrong_permission_mode_is_refused(tmp_path: Path):
    assert sandbox_extras(Settings(), "demo", "x", {"ANTHROPIC_API_KEY": "k"}).env == {}
    with pytest.raises(InvalidInput, match="bypassPermissions"):
        sandbox_extras(Settings(claude_permission_mode="yes"), "claude", None, {})


def test_the_shim_gives_the_cli_its_own_token_as_the_brokers_stand_in_key(tmp_path: Path):
    import logging

    from agent_shim.__main__ import model_stand_in
    from agent_shim.config import ShimConfig

    token = tmp_path / "token"
    token.write_text("avt_agent-token\n")
    config = ShimConfig(profile=load_profile("claude", {}), token_file=str(token))
    log = logging.getLogger("test")
    broker = {"AGENTVISOR_MODEL_BROKER": "1"}
    assert model_stand_in(config, broker, log) == {"ANTHROPIC_API_KEY": "avt_agent-token"}
    assert model_stand_in(config, {}, log) == {}  # other profiles: nothing
    missing = ShimConfig(profile=config.profile, token_file=str(tmp_path / "none"))
    assert model_stand_in(missing, broker, log) == {}
