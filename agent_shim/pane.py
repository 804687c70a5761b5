"""Typing text into an agent's tmux pane and reading it back, with libtmux.

Every tmux call passes an argv list; nothing is built as a shell or tmux command string.
Text is typed literally: it is sanitised first (see `text.sanitise`), single short lines go
through `send-keys -l`, anything else through a uniquely named paste buffer pasted with
`paste-buffer -p` (bracketed paste when the agent CLI asked for it).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable

import libtmux

from agent_shim import screen
from agent_shim.history import HistoryError, SavedScreens, capture_spliced
from agent_shim.profiles import Profile
from agent_shim.text import (
    marker_token,
    message_header,
    needs_paste,
    prepare_body,
    send_keys_literal_arg,
)
from agent_shim.tmux_control import ControlledServer

POLL_INTERVAL_S = 0.025  # the longest wait between two looks at the screen
MIN_INTERVAL_S = 0.002  # the shortest, when the pane keeps writing
VERIFY_STEP_S = 0.5  # how often the recent history is searched for a typed text's marker

# One write lock per pane, shared by every AgentPane object for it: texts never interleave.
_WRITE_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(server: libtmux.Server, pane_id: str) -> threading.Lock:
    key = (str(server.socket_path or server.socket_name or ""), pane_id)
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.Lock())


class PaneError(Exception):
    """A tmux command on the agent's pane failed (pane or tmux server gone)."""


class AgentPane:
    """One tmux pane running an agent CLI. Writes to a pane are serialised by its lock.
    `screens`: where the screens cleared at the CLI's restarts are kept, part of its history."""

    def __init__(
        self, server: libtmux.Server, pane_id: str, screens: SavedScreens | None = None
    ) -> None:
        self.server = server
        self.pane_id = pane_id
        self.screens = screens
        self._write_lock = _write_lock(server, pane_id)

    def _tmux(self, *args: str, target: bool = True) -> list[str]:
        command, *rest = args
        result = self.server.cmd(command, *rest, target=self.pane_id if target else None)
        if result.returncode != 0:
            detail = " ".join(result.stderr) or f"exit status {result.returncode}"
            raise PaneError(f"tmux {command} on pane {self.pane_id} failed: {detail}")
        return list(result.stdout)

    # Reading.

    def capture_screen(self) -> list[str]:
        """The visible screen, wrapped lines joined."""
        return self._tmux("capture-pane", "-p", "-J")

    def capture_history(self) -> str:
        """The whole pane: scrollback history and visible screen, wrapped lines joined, with
        the screens cleared at the CLI's restarts back in place (agent_shim.history)."""
        try:
            return "\n".join(capture_spliced(self.server, self.pane_id, self.screens))
        except HistoryError as error:
            raise PaneError(f"tmux capture-pane on pane {self.pane_id} failed: {error}") from None

    def wait_shown(self, marker: str, body: str, timeout_s: float) -> bool:
        """Whether a text just typed showed: its marker on the screen, or in the recent
        history when the CLI echoed a long paste in full and the marker scrolled off the
        screen (looked for every VERIFY_STEP_S, so such a delivery does not wait out
        `timeout_s`), or at the end (or once the CLI exited) anywhere in the history."""
        token = marker_token(marker)
        size = self.info("#{pane_width} #{pane_height}").split()  # one tmux command for both
        width, height = (max(1, int(size[0])), int(size[1])) if len(size) == 2 else (80, 50)
        # Physical lines the text may take once wrapped, three times over (the terminal's
        # echo of a paste and the CLI's own copy of it), and two screens of margin.
        wrapped = sum(len(line) // width + 1 for line in body.split("\n"))
        recent = 3 * wrapped + 2 * height
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            step = max(0.0, min(VERIFY_STEP_S, remaining))
            if self.wait_until(lambda lines: token in "\n".join(lines), step):
                return True
            if self.recent_contains(marker, recent):
                return True
            # A CLI that exited shows nothing more: the answer is what the pane kept, now.
            if remaining <= step or self.is_dead():
                return self.pane_contains(marker)

    def recent_contains(self, marker: str, lines: int) -> bool:
        """Whether the marker is in the last `lines` lines of history or on the screen: where
        a text just typed is, even when the CLI echoed so much of it that its start scrolled
        off the screen (cheaper than the whole history)."""
        recent = self._tmux("capture-pane", "-p", "-J", "-S", f"-{max(lines, 1)}")
        return marker_token(marker) in "\n".join(recent)

    def pane_contains(self, marker: str) -> bool:
        """Whether the marker of a message (its bracketed form) is anywhere in the pane."""
        return marker_token(marker) in self.capture_history()

    def info(self, fmt: str) -> str:
        """A tmux format expanded for this pane, e.g. `#{pane_dead}`."""
        lines = self._tmux("display-message", "-p", fmt)
        return lines[0] if lines else ""

    def is_ready(self, profile: Profile) -> bool:
        return screen.is_ready(profile, self.capture_screen())

    def is_dead(self) -> bool:
        """Whether the CLI in this pane has exited (the pane stays, remain-on-exit)."""
        return self.info("#{pane_dead}") == "1"

    def wait_until(
        self,
        predicate: Callable[[list[str]], bool],
        timeout_s: float,
        until_exit: bool = False,
        min_interval_s: float = MIN_INTERVAL_S,
        poll_s: float = POLL_INTERVAL_S,
    ) -> bool:
        """Look at the visible screen until `predicate(lines)` holds, again whenever the pane
        writes (over a control connection) and at least every `poll_s`; False after
        `timeout_s`, or (with `until_exit`) as soon as the CLI has exited: a dead pane shows
        nothing more. A pane that keeps writing is looked at no more than every
        `min_interval_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            since = self._output_version()
            if predicate(self.capture_screen()):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (until_exit and self.is_dead()):
                return False
            self._pause(since, min(min_interval_s, remaining), min(poll_s, remaining))

    def _output_version(self) -> int | None:
        if isinstance(self.server, ControlledServer):
            return self.server.output_version(self.pane_id)
        return None

    def _pause(
        self,
        since: int | None,
        min_interval_s: float = MIN_INTERVAL_S,
        poll_s: float = POLL_INTERVAL_S,
    ) -> None:
        """Until the pane writes after `since` (at least `min_interval_s`), or at most `poll_s`
        (without a control connection, `poll_s`): the screen may also change for reasons no
        output shows."""
        if not isinstance(self.server, ControlledServer):
            time.sleep(poll_s)
            return
        begin = time.monotonic()
        self.server.wait_for_output(self.pane_id, since, max(poll_s, min_interval_s))
        rest = min_interval_s - (time.monotonic() - begin)
        if rest > 0:
            time.sleep(rest)

    def wait_until_ready(self, profile: Profile, timeout_s: float) -> bool:
        """Wait until the agent shows its ready prompt; False after `timeout_s`."""
        return self.wait_until(lambda lines: screen.is_ready(profile, lines), timeout_s)

    def wait_until_stable(self, timeout_s: float, settle_s: float) -> bool:
        """Wait until the screen has not changed for `settle_s`; False after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        version = self._output_version()
        previous, since = self.capture_screen(), time.monotonic()
        while time.monotonic() < deadline:
            self._pause(version)
            version = self._output_version()
            current, now = self.capture_screen(), time.monotonic()
            if current != previous:
                previous, since = current, now
            elif now - since >= settle_s:
                return True
        return False

    # Writing.

    def type_message(self, marker: str, body: str, sender: str) -> None:
        """Type the header `[marker] from SENDER: ` and the prepared body (`text.prepare_body`),
        without submitting, in ONE tmux command: the header and the text reach the pane
        together or not at all, so a marker in the pane always comes with its whole text. The
        header is typed as keys before a pasted body so that it (marker and sender) stays
        visible when the CLI folds a long paste into a placeholder such as
        `[Pasted text #1 +40 lines]`."""
        text = prepare_body(body)
        prefix = message_header(marker, sender)
        with self._write_lock:
            self._leave_copy_mode()
            if needs_paste(prefix + text):
                self._paste(text, prefix)
            else:
                self._send_literal(prefix + text)

    def type_text(self, text: str) -> None:
        """Type `text` (sanitised) literally, without a marker and without submitting."""
        text = prepare_body(text)
        with self._write_lock:
            self._leave_copy_mode()
            if needs_paste(text):
                self._paste(text)
            elif text:
                self._send_literal(text)

    def send_keys(self, *keys: str) -> None:
        """Send tmux key names (e.g. `Enter`), as keys: only ever the profile's submit keys."""
        with self._write_lock:
            self._leave_copy_mode()
            for key in keys:
                self._tmux("send-keys", key)

    def _leave_copy_mode(self) -> None:
        # In copy mode (an operator scrolling) send-keys would drive the mode, not the agent.
        if self.info("#{pane_in_mode}") == "1":
            self._tmux("send-keys", "-X", "cancel")

    def _send_literal(self, text: str) -> None:
        self._tmux("send-keys", "-l", "--", send_keys_literal_arg(text))

    def _paste(self, text: str, prefix: str = "") -> None:
        """Paste `text` from a uniquely named buffer (concurrent pastes never mix, and `-d`
        leaves none behind), after typing `prefix` as keys in the same tmux command."""
        buffer_name = f"agentvisor-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        descriptor, path = tempfile.mkstemp(prefix="agentvisor-paste-")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(text)
            self._tmux("load-buffer", "-b", buffer_name, path, target=False)
        finally:
            os.unlink(path)
        command: list[str] = []
        if prefix:
            literal = send_keys_literal_arg(prefix)
            command += ["send-keys", "-t", self.pane_id, "-l", "--", literal, ";"]
        command += ["paste-buffer", "-t", self.pane_id, "-p", "-d", "-b", buffer_name]
        try:
            self._tmux(*command, target=False)
        except PaneError:
            self.server.cmd("delete-buffer", "-b", buffer_name)
            raise
