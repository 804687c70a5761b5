"""The `agent` command line and the old tools' wrappers, without a server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent_shim.agent_cli import UsageError, build_parser, describe, resolve_target

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "agent_shim" / "bin"


@pytest.mark.parametrize(
    ("target", "role"),
    [
        ("developer", "developer"),
        ("tmux-orc:0", "orchestrator"),
        ("proj:0.1", "orchestrator"),
        ("proj:orchestrator", "orchestrator"),
        ("proj:Developer", "developer"),
        ("proj:tester.0", "tester"),
        (":qa", "qa"),
        ("documentation_writer", "documentation-writer"),
        ("proj:QA_Engineer", "qa-engineer"),
        ("proj:1", "developer"),
        ("proj:2.0", "tester"),
    ],
)
def test_old_tmux_targets_map_to_roles(target: str, role: str):
    assert resolve_target(target, lambda: ["orchestrator", "developer", "tester"]) == role


def test_a_window_number_past_the_team_says_who_is_there():
    with pytest.raises(UsageError, match=r"window 5 has no agent .*orchestrator, developer"):
        resolve_target("proj:5", lambda: ["orchestrator", "developer"])


def test_checkin_arguments():
    args = build_parser().parse_args(
        ["checkin", "30", "look at CI", "--every", "60", "--to", "proj:0"]
    )
    assert (args.minutes, args.note, args.every, args.to) == (30.0, "look at CI", 60.0, "proj:0")


def run_agent(
    *argv: str, env: dict[str, str] | None = None, program: str = "agent"
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVISOR_")}
    environment.pop("PYTHONPATH", None)  # bin/agent finds the package beside itself
    environment.update(env or {})
    return subprocess.run(
        [str(BIN / program), *argv],
        capture_output=True,
        text=True,
        env=environment,
        timeout=30,
        check=False,
    )


def test_usage_mistakes_exit_2_with_one_line(tmp_path: Path):
    result = run_agent("checkin", "-5", "note")
    assert result.returncode == 2
    assert "minutes must be more than 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_server_is_one_line_and_exit_1(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("t0k3n\n")
    result = run_agent(
        "send",
        "orchestrator",
        "hello",
        env={"AGENTVISOR_SOCKET": str(tmp_path / "nope.sock"), "AGENTVISOR_TOKEN_FILE": str(token)},
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "agentvisor server not reachable at" in result.stderr
    assert "it may be restarting, try again" in result.stderr


def test_missing_token_file_is_one_line_and_exit_1(tmp_path: Path):
    result = run_agent("whoami", env={"AGENTVISOR_TOKEN_FILE": str(tmp_path / "none")})
    assert result.returncode == 1
    assert "cannot read the agent token" in result.stderr
    assert "Traceback" not in result.stderr


def test_event_data_must_be_a_json_object(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("t")
    result = run_agent("event", "hook", "[1, 2]", env={"AGENTVISOR_TOKEN_FILE": str(token)})
    assert result.returncode == 2
    assert "must be a JSON object" in result.stderr


@pytest.mark.parametrize(
    ("program", "argv"),
    [
        ("schedule_with_note.sh", ["1"]),
        ("send-claude-message.sh", ["only-target"]),
        ("report-completion.sh", []),
    ],
)
def test_wrappers_check_their_arguments(program: str, argv: list[str]):
    result = run_agent(*argv, program=program)
    assert result.returncode == 2
    assert result.stderr.startswith("usage:")


def test_answers_are_described_in_one_line():
    parser = build_parser()
    send = parser.parse_args(["send", "proj:tester", "hi"])
    assert describe(send, {"id": 7, "state": "queued"}) == "message 7 to tester queued"
    checkin = parser.parse_args(["checkin", "5", "n", "--every", "90"])
    assert describe(checkin, {"id": 3, "due_at": 0, "every_s": 5400.0}).endswith(
        ", then every 90 min"
    )
    whoami = parser.parse_args(["whoami"])
    assert describe(whoami, {"kind": "agent", "role": "dev", "project": "p"}) == "dev on project p"
    assert describe(parser.parse_args(["inbox"]), []) == "no messages waiting"


def test_the_entry_point_runs_with_the_current_interpreter_too():
    result = subprocess.run(
        [sys.executable, "-m", "agent_shim.agent_cli", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0
    assert "checkin" in result.stdout
