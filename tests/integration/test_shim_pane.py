"""Typing into real tmux panes: the demo agent (raw input, bracketed paste) or `cat`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import libtmux
import pytest

from agent_shim import screen
from agent_shim.history import SavedScreens, seam_line
from agent_shim.pane import AgentPane
from agent_shim.profiles import load_profile
from agent_shim.session import AgentSession
from agent_shim.text import marker_token, prepare_body
from agent_shim.tmux_control import ControlledServer
from tests.conftest import require
from tests.helpers import wait_until

pytestmark = pytest.mark.tmux

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "agent_shim" / "bin"
DEMO = load_profile("demo", {})


@pytest.fixture
def tmux_server(short_tmp: Path) -> Iterator[libtmux.Server]:
    """A throwaway tmux server whose socket lives (and goes) with the test's temp dir, as the
    shim has it: reads and key names over a control connection to the session `agent`."""
    require(shutil.which("tmux") is not None, "tmux")
    server = ControlledServer(socket_path=short_tmp / "tmux.sock")
    yield server
    server.close()
    if server.is_alive():
        server.kill()


@dataclass
class Demo:
    pane: AgentPane
    session: AgentSession
    record: Path

    def prompts(self) -> list[str]:
        if not self.record.exists():
            return []
        return [json.loads(line)["prompt"] for line in self.record.read_text().splitlines()]

    def wait_for_prompts(self, count: int) -> list[str]:
        wait_until(
            lambda: len(self.prompts()) >= count,
            timeout_s=10,
            message=f"{count} prompts to reach the demo agent",
        )
        assert self.pane.wait_until_ready(DEMO, 10)
        return self.prompts()

    def deliver(self, marker: str, body: str, sender: str = "operator") -> None:
        self.pane.type_message(marker, body, sender)
        self.pane.send_keys("Enter")


@pytest.fixture
def demo(tmux_server: libtmux.Server, tmp_path: Path) -> Demo:
    record = tmp_path / "prompts.jsonl"
    env = {
        "PYTHONPATH": str(REPO),
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "AGENTVISOR_DEMO_RECORD": str(record),
    }
    screens = SavedScreens(tmp_path / "screens")
    session = AgentSession(tmux_server, DEMO, str(tmp_path), env, screens=screens)
    pane = session.ensure()
    assert pane is not None
    assert pane.wait_until_ready(DEMO, 10), pane.capture_screen()
    return Demo(pane, session, record)


def test_demo_agent_is_ready_at_its_prompt_and_busy_while_working(demo: Demo):
    assert demo.pane.is_ready(DEMO)
    demo.deliver("av-b1", "DEMO:busy 1")
    assert demo.pane.wait_until(lambda lines: not screen.is_ready(DEMO, lines), 5)
    assert demo.pane.wait_until_ready(DEMO, 10)
    assert "finished working" in demo.pane.capture_history()


def test_five_line_message_arrives_as_one_prompt(demo: Demo):
    body = "\n".join(f"line {i}: do the thing" for i in range(1, 6))
    demo.deliver("av-5l", body)
    assert demo.wait_for_prompts(1) == ["[av-5l] from operator: " + body]
    assert demo.pane.capture_history().count("ok: received av-5l") == 1


@pytest.mark.parametrize("shape", ["lines", "one-line"])
def test_twenty_kb_message_arrives_whole(demo: Demo, shape: str):
    if shape == "lines":
        body = "\n".join(f"{i:05d} " + "lorem ipsum dolor sit amet " * 3 for i in range(250))
    else:
        body = "".join(f"<{i:05d}>" for i in range(3000))
    assert len(body.encode()) > 20_000
    demo.deliver("av-20k", body)
    assert demo.wait_for_prompts(1) == ["[av-20k] from operator: " + prepare_body(body)]


def test_escape_sequences_are_typed_as_visible_text(demo: Demo):
    body = (
        "colour \x1b[31mred\x1b[0m, clipboard \x1b]52;c;ZXZpbA==\x07, title \x1b]0;pwn\x07,"
        "\nend of paste \x1b[201~ then \x1b[200~ and a bell \x07 and \r carriage"
    )
    demo.deliver("av-esc", body)
    assert demo.wait_for_prompts(1) == ["[av-esc] from operator: " + prepare_body(body)]
    assert "^[[31mred" in demo.prompts()[0]
    assert demo.pane.info("#{pane_title}") != "pwn"


def test_escape_in_a_short_single_line_is_typed_visibly_too(demo: Demo):
    demo.deliver("av-esc1", "stop \x1b[201~\x1b[2J now")
    assert demo.wait_for_prompts(1) == ["[av-esc1] from operator: stop ^[[201~^[[2J now"]


@pytest.mark.parametrize(
    "body",
    [
        "C-c",
        "Enter",
        "Escape",
        "press C-c then Enter; or C-d",
        "ends with ;",
        "\\;",
        "-l --",
        "#{pane_id} $HOME ~ {}",
    ],
)
def test_tmux_key_names_and_syntax_are_typed_literally(demo: Demo, body: str):
    demo.deliver("av-key", body)
    assert demo.wait_for_prompts(1) == ["[av-key] from operator: " + body]


def test_key_names_inside_a_pasted_block_are_literal(demo: Demo):
    body = "C-c\nEnter\nEscape\nC-d"
    demo.deliver("av-keys", body)
    assert demo.wait_for_prompts(1) == ["[av-keys] from operator: " + body]


def test_marker_is_found_in_history_after_it_scrolled_off_screen(tmux_server: libtmux.Server):
    created = tmux_server.cmd(
        "new-session",
        "-d",
        "-s",
        "cat",
        "-x",
        "80",
        "-y",
        "10",
        "-P",
        "-F",
        "#{pane_id}",
        "--",
        "cat",
    )
    pane = AgentPane(tmux_server, created.stdout[0])
    pane.type_message("av-old", "first message", "operator")
    pane.send_keys("Enter")
    for i in range(100):
        pane.type_text(f"filler {i}")
        pane.send_keys("Enter")
    assert pane.wait_until(lambda lines: "filler 99" in "\n".join(lines), 10)
    assert marker_token("av-old") not in "\n".join(pane.capture_screen())
    assert pane.pane_contains("av-old")
    assert not pane.pane_contains("av-ol")  # bracketed: a prefix is another marker


def test_typed_but_unsubmitted_text_is_seen_as_pending(demo: Demo):
    demo.pane.type_message("av-pend", "wait for it", "operator")
    assert demo.pane.wait_until(lambda lines: screen.pending_marker(DEMO, lines) == "av-pend", 5)
    assert demo.prompts() == []
    demo.pane.send_keys("Enter")
    assert demo.pane.wait_until(lambda lines: screen.pending_marker(DEMO, lines) is None, 5)
    assert demo.wait_for_prompts(1) == ["[av-pend] from operator: wait for it"]


def test_a_usage_limit_notice_printed_by_the_agent_is_detected(demo: Demo):
    demo.deliver("av-lim", "DEMO:usage-limit 5-hour limit reached ∙ resets 3pm")
    demo.wait_for_prompts(1)
    notice = screen.find_usage_limit(DEMO, demo.pane.capture_screen())
    assert notice == "5-hour limit reached ∙ resets 3pm"


def test_typing_leaves_copy_mode_and_leaves_no_paste_buffer(
    demo: Demo, tmux_server: libtmux.Server
):
    demo.pane._tmux("copy-mode")
    assert demo.pane.info("#{pane_in_mode}") == "1"
    demo.deliver("av-cm", "a\nb")
    assert demo.wait_for_prompts(1) == ["[av-cm] from operator: a\nb"]
    buffers = tmux_server.cmd("list-buffers", "-F", "#{buffer_name}").stdout
    assert not [name for name in buffers if name.startswith("agentvisor-")]


def test_an_agent_that_exits_is_restarted_in_the_same_pane(demo: Demo):
    demo.deliver("av-exit", "DEMO:exit")
    wait_until(
        lambda: demo.pane.info("#{pane_dead}") == "1",
        timeout_s=10,
        message="the demo agent to exit",
    )
    # A CLI that dies young is restarted after a short delay, in the same pane.
    pane = wait_until(demo.session.ensure, timeout_s=10, message="the agent to restart")
    assert pane.pane_id == demo.pane.pane_id
    assert pane.wait_until_ready(DEMO, 10)
    demo.deliver("av-back", "hello again")
    assert demo.wait_for_prompts(2)[-1] == "[av-back] from operator: hello again"


def test_the_agents_last_screen_survives_its_restart_in_the_pane_history_once(
    demo: Demo, tmux_server: libtmux.Server
):
    """tmux clears the visible screen of a respawned pane; the shim keeps it, and the history
    (the exactly-once witness) has every marker once: before, at and after the restart."""
    demo.deliver("av-ra", "RESPAWN-A")
    demo.wait_for_prompts(1)
    demo.deliver("av-rc", "RESPAWN-C DEMO:exit")
    wait_until(lambda: demo.pane.info("#{pane_dead}") == "1", timeout_s=10, message="the exit")
    pane = wait_until(demo.session.ensure, timeout_s=10, message="the agent to restart")
    assert pane.wait_until_ready(DEMO, 10)
    demo.deliver("av-after", "after the restart")
    assert demo.wait_for_prompts(3)[-1] == "[av-after] from operator: after the restart"
    raw = "\n".join(tmux_server.cmd("capture-pane", "-p", "-J", "-S", "-", "-t", "=agent:^").stdout)
    assert "RESPAWN" not in raw  # what tmux alone keeps: the reason for the saved screen
    history = pane.capture_history()
    for marker in ("av-ra", "av-rc", "av-after"):
        assert history.count(f"[{marker}]") == 1, history
    assert history.count("ok: received av-ra") == 1
    assert demo.session.screens is not None
    (restart,) = demo.session.screens.load()
    seam = seam_line(restart.restart_id)
    assert history.index("RESPAWN-C") < history.index(seam) < history.index("[av-after]")
    assert pane.pane_contains("av-rc")  # the shim's own witness search sees it too


def test_the_session_is_created_on_a_foreground_tmux_server_like_supervisords(
    short_tmp: Path, tmp_path: Path
):
    require(shutil.which("tmux") is not None, "tmux")
    socket = short_tmp / "foreground.sock"
    foreground = subprocess.Popen(["tmux", "-S", str(socket), "-D"], stdin=subprocess.DEVNULL)
    server = libtmux.Server(socket_path=socket)
    try:
        session = AgentSession(server, DEMO, str(tmp_path), {"PYTHONPATH": str(REPO)})
        assert session.wait_for_server(10)
        pane = session.ensure()
        assert pane is not None and pane.wait_until_ready(DEMO, 10)
        assert server.cmd("display-message", "-p", "#{pid}").stdout == [str(foreground.pid)]
    finally:
        foreground.terminate()
        foreground.wait(timeout=10)


def test_a_session_to_resume_starts_with_the_resume_command_and_falls_back_when_it_dies(
    tmux_server: libtmux.Server, tmp_path: Path
):
    # Like `claude --resume ID` when the conversation was never saved: it exits at once.
    profile = replace(
        load_profile("generic", {"AGENTVISOR_AGENT_COMMAND": "x", "AGENTVISOR_READY_PATTERN": "x"}),
        command=("sh", "-c", "echo started fresh; exec sleep 60"),
        resume_command=("sh", "-c", "echo no conversation to resume; exit 1"),
    )
    session = AgentSession(tmux_server, profile, str(tmp_path), {}, resume_at_start=True)

    def history() -> str:
        return "\n".join(tmux_server.cmd("capture-pane", "-p", "-S", "-", "-t", "=agent:^").stdout)

    session.ensure()
    wait_until(lambda: "no conversation to resume" in history(), timeout_s=10)
    wait_until(
        lambda: session.ensure() is not None and "started fresh" in history(),
        timeout_s=15,
        message="the fresh command after the failed resume",
    )


def test_a_long_paste_echoed_in_full_is_verified_as_soon_as_its_marker_shows(
    tmux_server: libtmux.Server,
):
    """`cat` echoes every line of a paste: the marker scrolls off a 10-line screen at once.
    The typed text is seen in the recent history, not after the whole verify timeout."""
    created = tmux_server.cmd(
        "new-session", "-d", "-s", "echo", "-x", "80", "-y", "10", "-P", "-F", "#{pane_id}",
        "--", "cat",
    )  # fmt: skip
    pane = AgentPane(tmux_server, created.stdout[0])
    body = "\n".join(f"line {i} of a long report" for i in range(300))
    started = time.monotonic()
    pane.type_message("av-long", body, "developer")
    assert pane.wait_shown("av-long", body, timeout_s=15)
    took = time.monotonic() - started
    assert marker_token("av-long") not in "\n".join(pane.capture_screen())  # scrolled off
    assert took < 7.5, f"verified after {took:.1f} s: it waited for the timeout"
    assert not pane.wait_shown("av-none", "never typed", timeout_s=1)
