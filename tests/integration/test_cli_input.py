"""The `agentvisor` CLI, run for real as a subprocess: bad input of any kind is one line on
stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, ServerProcess


def agentvisor(
    state: Path, *args: str | bytes, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "agentvisor", "--state", str(state), *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        timeout=60,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], *words: str) -> str:
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode != 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    assert result.stdout == b"", result.stdout
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ("schedule", "nan", "note"),
        ("schedule", "inf", "note"),
        ("schedule", "--", "-inf", "note"),
        ("schedule", "1e999", "note"),
        ("schedule", "5", "note", "--every", "nan"),
        ("budget", "demo", "--project-hours", "inf"),
        ("up", "spec.md", "--checkin-minutes", "nan"),
        ("up", "spec.md", "--budget", "agent-tokens-per-day=inf"),
        ("up", "spec.md", "--budget", "project-hours=nan"),
    ],
)
def test_a_non_finite_number_on_the_command_line_is_one_line(short_tmp: Path, args):
    assert_one_line_error(agentvisor(short_tmp, *args), "finite number")


@pytest.mark.parametrize(
    "args",
    [
        (b"send", b"developer", b"caf\xe9"),  # Latin-1, not UTF-8
        (b"schedule", b"5", b"\xff\xfe note"),
        (b"projects", b"--state", b"/tmp/\xc3"),
    ],
)
def test_invalid_utf8_on_the_command_line_is_one_line(short_tmp: Path, args):
    assert_one_line_error(agentvisor(short_tmp, *args), "not valid UTF-8")


def test_a_message_on_stdin_that_is_not_utf8_is_one_line(short_tmp: Path):
    result = agentvisor(short_tmp, "send", "developer", "-", stdin=b"caf\xe9\n")
    assert_one_line_error(result, "stdin", "not valid UTF-8")


@pytest.mark.parametrize("make", ["missing", "directory", "fifo", "not utf-8", "empty"])
def test_an_unusable_spec_file_is_one_line(short_tmp: Path, make):
    spec = short_tmp / "spec.md"
    if make == "directory":
        spec.mkdir()
    elif make == "fifo":
        os.mkfifo(spec)
    elif make == "not utf-8":
        spec.write_bytes(b"# Title\n\nBuild a caf\xe9 finder for the whole town today.\n")
    elif make == "empty":
        spec.write_bytes(b"")
    assert_one_line_error(agentvisor(short_tmp / "state", "plan", str(spec)), "Spec")


@pytest.mark.parametrize("args", [("bogus",), ("schedule",), ("schedule", "abc", "note")])
def test_a_usage_mistake_is_one_line(short_tmp: Path, args):
    assert_one_line_error(agentvisor(short_tmp, *args), "--help")


def test_an_id_out_of_range_is_one_line_from_the_server(server: ServerProcess):
    server.ensure_project()
    result = agentvisor(server.state_dir, "checkins", "--cancel", "99999999999999999999")
    assert_one_line_error(result, "checkin_id")


def test_the_version_and_help_still_exit_zero(short_tmp: Path):
    assert agentvisor(short_tmp, "--version").returncode == 0
    assert agentvisor(short_tmp, "schedule", "--help").returncode == 0
