"""The server says the truth about itself (#14 point 4): `serve --detach` reports success only
once the new server answers, else the cause in one line and a non-zero exit; a busy port is a
one-line error in the foreground too; a state dir on a full disk is one line, not a traceback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers import tiny_tmpfs


def _agentvisor(state: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVISOR_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "agentvisor", "--state", str(state), *args],
        capture_output=True, text=True, timeout=timeout_s, env=env,
    )  # fmt: skip


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


def test_serve_detach_on_a_busy_port_fails_in_one_line_and_leaves_no_server(
    short_tmp: Path, busy_port: int
):
    state = short_tmp / "state"
    done = _agentvisor(state, "serve", "--detach", "--port", str(busy_port))
    line = _one_line_error(done)
    assert str(busy_port) in line and "server running" not in done.stdout
    assert not (state / "api.sock").exists()
    assert _agentvisor(state, "status").returncode != 0  # nothing answers there


def test_serve_in_the_foreground_on_a_busy_port_fails_in_one_line(short_tmp: Path, busy_port: int):
    done = _agentvisor(short_tmp / "state", "serve", "--port", str(busy_port))
    assert str(busy_port) in _one_line_error(done)


@pytest.fixture
def full_disk(short_tmp: Path) -> Iterator[Path]:
    with tiny_tmpfs(short_tmp, "256k") as mount:
        # written until the disk is full
        with open(mount / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"x" * 4096)
        yield mount


def test_serve_detach_with_the_state_on_a_full_disk_fails_in_one_line(full_disk: Path):
    done = _agentvisor(full_disk / "state", "serve", "--detach")
    line = _one_line_error(done)
    assert "server running" not in done.stdout
    assert "space" in line.lower() or "full" in line.lower() or "cannot" in line.lower(), line
