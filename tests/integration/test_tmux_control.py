"""The shim's tmux control connection (`agent_shim/tmux_control.py`) on a real tmux server:
same answers as forked clients, framing that pane text cannot break, output wake-ups, and
forked clients whenever no connection stands."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import libtmux
import pytest

from agent_shim.tmux_control import ControlledServer, control_line, quote
from tests.conftest import require
from tests.helpers import wait_until

pytestmark = pytest.mark.tmux

SIZE = ("-x", "200", "-y", "50")


@pytest.fixture
def server(short_tmp: Path) -> Iterator[ControlledServer]:
    require(shutil.which("tmux") is not None, "tmux")
    tmux = ControlledServer(socket_path=short_tmp / "tmux.sock")
    result = tmux.cmd("new-session", "-d", "-s", "agent", *SIZE, "--", "cat")
    assert result.returncode == 0, result.stderr
    # The connection is made in the background; commands fork until it stands.
    wait_until(lambda: over_control(tmux), timeout_s=5, message="the control connection")
    yield tmux
    tmux.close()
    if tmux.is_alive():
        tmux.kill()


def forked(server: ControlledServer, *args: str, target: str | None = None) -> list[str]:
    return list(libtmux.Server.cmd(server, *args, target=target).stdout)


def over_control(server: ControlledServer) -> bool:
    """Whether the server's commands go over its control connection right now."""
    return server.cmd("display-message", "-p", "#{client_control_mode}").stdout == ["1"]


def test_reads_and_key_names_go_over_the_connection_with_the_answers_of_forked_clients(
    server: ControlledServer,
):
    assert over_control(server)
    server.cmd("send-keys", "-t", "=agent:^", "hello", "Space", "world", "Enter")
    wait_until(lambda: "hello world" in forked(server, "capture-pane", "-p", "-t", "=agent:^"))
    for args in (
        ("capture-pane", "-p", "-J", "-t", "=agent:^"),
        ("capture-pane", "-p", "-J", "-S", "-", "-t", "=agent:^"),
        ("list-panes", "-t", "=agent:^", "-F", "#{pane_id} #{pane_dead} #{pane_dead_status}"),
        ("display-message", "-p", "-t", "=agent:^", "$HOME ~ ${X} {a} #{pane_in_mode} ;x"),
    ):
        assert server.cmd(*args).stdout == forked(server, *args), args
    failed = server.cmd("capture-pane", "-p", "-t", "=nosuch:^")
    assert failed.returncode == 1 and "nosuch" in " ".join(failed.stderr)


def test_pane_text_that_looks_like_protocol_lines_does_not_end_a_block(
    server: ControlledServer,
):
    lines = ["%end 1795603460 270 1", "%error 1 2 1", "%begin 1 2 1", "%exit", "%output %0 x"]
    for line in lines:
        server.cmd("send-keys", "-t", "=agent:^", "-l", line)  # -l: a forked client
        server.cmd("send-keys", "-t", "=agent:^", "Enter")
        # cat's echo of this line before the next is typed, so that the two never interleave
        wait_until(lambda: forked(server, "capture-pane", "-p").count(line) == 2)  # noqa: B023

    screen = server.cmd("capture-pane", "-p", "-t", "=agent:^").stdout

    for line in lines:
        assert screen.count(line) == 2  # typed, and echoed back by cat
    assert over_control(server)


def test_a_wait_for_output_wakes_when_the_pane_writes(server: ControlledServer):
    pane_id = server.cmd("display-message", "-p", "-t", "=agent:^", "#{pane_id}").stdout[0]
    since = server.output_version(pane_id)
    assert since is not None

    begin = time.monotonic()
    server.wait_for_output(pane_id, since, 0.2)  # nothing written: the whole timeout
    assert time.monotonic() - begin >= 0.19

    server.cmd("send-keys", "-t", pane_id, "x", "Enter")
    begin = time.monotonic()
    server.wait_for_output(pane_id, since, 5.0)
    assert time.monotonic() - begin < 1.0
    assert server.output_version(pane_id) != since


def test_the_control_client_leaves_the_window_size_alone(server: ControlledServer):
    assert over_control(server)
    size = forked(
        server, "display-message", "-p", "-t", "=agent:^", "#{window_width}x#{window_height}"
    )
    assert size == ["200x50"]


def test_without_a_session_commands_fork_and_the_connection_comes_back(
    server: ControlledServer,
):
    assert over_control(server)
    # "other" first: killing the server's last session would end the server itself, and a
    # command racing its exit could find no server at all.
    server.cmd("new-session", "-d", "-s", "other", *SIZE, "--", "cat")
    server.cmd("kill-session", "-t", "=agent")

    # The connection ended with its session: forked clients answer meanwhile.
    wait_until(lambda: not over_control(server), message="the connection to end")
    assert server.cmd("list-panes", "-t", "=other:^", "-F", "#{pane_dead}").stdout == ["0"]

    server.cmd("new-session", "-d", "-s", "agent", *SIZE, "--", "cat")
    wait_until(lambda: over_control(server), timeout_s=5, message="the connection to come back")


def test_only_commands_that_cannot_carry_a_message_go_over_the_connection():
    assert control_line("capture-pane", ("-p", "-t", "%1")) == "capture-pane '-p' '-t' '%1'"
    assert control_line("send-keys", ("-t", "%1", "Enter")) == "send-keys '-t' '%1' 'Enter'"
    assert control_line("send-keys", ("-t", "%1", "-l", "--", "text")) is None
    assert control_line("paste-buffer", ("-t", "%1", "-b", "x")) is None
    assert control_line("load-buffer", ("-b", "x", "/tmp/f")) is None
    assert control_line("display-message", ("-p", "it's")) is None
    assert control_line("display-message", ("-p", "a\nb")) is None
    assert control_line("send-keys", ("-t", "%1", "Enter", ";", "kill-server")) is None
    assert quote("#{pane_id} $HOME ~") == "'#{pane_id} $HOME ~'"
    assert quote("\x1b[31m") is None
