"""One tmux control-mode connection (`tmux -C attach`) for the shim's frequent commands.

A delivery reads the pane several times (is the prompt there, did the text arrive, did it
leave the input box) and a heartbeat reads it once a second or so. Forking a `tmux` client
for each costs ~2.5 ms of CPU; over one control-mode connection a command is a line written
to a pipe and its answer a block read back. The connection also reports every `%output` of
the agent's pane, so a wait for the pane to change wakes when it changes instead of polling.

Only commands whose arguments cannot carry text from a message go this way: reads
(`capture-pane`, `display-message`, `list-panes`) and `send-keys` of key names. Text is
still typed by `send-keys -l` / `paste-buffer` in their own tmux process with an argv list
(see `pane.py`): a message never becomes part of a tmux command line.

tmux parses the lines of a control client as its command language, so every argument is
single-quoted; an argument that a single-quoted word cannot hold (a quote, a control
character) sends the command through a forked client instead, as does a `;`.
"""

from __future__ import annotations

import collections
import logging
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

import libtmux

log = logging.getLogger("agent_shim")

ANSWER_TIMEOUT_S = 5.0  # a connection that does not answer within this is closed
RECONNECT_AFTER_S = 1.0  # after a failed connection, forked clients until then
CONTROL_COMMANDS = frozenset({"capture-pane", "display-message", "list-panes", "send-keys"})


@dataclass
class ControlResult:
    """The answer to one command: the shape of libtmux's `tmux_cmd` the shim reads."""

    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    returncode: int = 0


class ControlClosed(Exception):
    """The control-mode connection ended (tmux server or session gone) or stopped answering.
    `written`: the command had been sent, so tmux may have run it."""

    def __init__(self, reason: str, written: bool = False) -> None:
        super().__init__(reason)
        self.written = written


def quote(argument: str) -> str | None:
    """`argument` as one single-quoted word of tmux's command language, or None when it
    cannot be one (tmux does no escapes or expansions inside single quotes)."""
    if "'" in argument or any(ord(char) < 0x20 or ord(char) == 0x7F for char in argument):
        return None
    return f"'{argument}'"


def control_line(command: str, args: tuple[str, ...]) -> str | None:
    """The control-mode line for `command args`, or None when it must not go that way."""
    if command not in CONTROL_COMMANDS or ";" in args:
        return None
    if command == "send-keys" and any(arg.startswith("-") and "l" in arg for arg in args):
        return None  # literal text: typed by a forked client with an argv list
    words = [quote(arg) for arg in args]
    if any(word is None for word in words):
        return None
    return " ".join([command, *(word for word in words if word is not None)])


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result = ControlResult()
        self.error: str | None = None


class ControlConnection:
    """A `tmux -C attach-session` process and the thread that reads its answers.

    Answers come back in the order commands were written, each framed by `%begin T N F` and
    a `%end T N F` (or `%error T N F`) with the same three numbers; a line of pane text that
    merely looks like `%end` does not end a block."""

    def __init__(self, argv: list[str]) -> None:
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._write_lock = threading.Lock()  # one writer at a time: answers come in order
        self._queue_lock = threading.Lock()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._attached = _Pending()  # the block answering the attach itself comes first
        self._pending.append(self._attached)
        self._closed = threading.Event()
        self._output = threading.Condition()
        self._versions: dict[str, int] = collections.defaultdict(int)
        self._reader = threading.Thread(target=self._read, name="tmux-control", daemon=True)
        self._reader.start()

    def wait_attached(self, timeout_s: float) -> bool:
        attached = self._attached
        return (
            attached.done.wait(timeout_s)
            and attached.error is None
            and attached.result.returncode == 0
            and not self.closed
        )

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def run(self, line: str, timeout_s: float = ANSWER_TIMEOUT_S) -> ControlResult:
        pending = _Pending()
        stdin = self._process.stdin
        assert stdin is not None
        with self._write_lock:
            if self.closed:
                raise ControlClosed("the control connection is closed")
            with self._queue_lock:
                self._pending.append(pending)
            try:
                stdin.write(line.encode() + b"\n")
                stdin.flush()
            except OSError as error:
                self.close()
                raise ControlClosed(f"cannot write to the control connection: {error}") from error
        if not pending.done.wait(timeout_s):
            self.close()
            raise ControlClosed(f"no answer within {timeout_s:.0f} s", written=True)
        if pending.error is not None:
            raise ControlClosed(pending.error, written=True)
        return pending.result

    # The pane's output, as a counter that moves with every `%output` notification.

    def output_version(self, pane_id: str) -> int:
        with self._output:
            return self._versions[pane_id]

    def wait_for_output(self, pane_id: str, since: int, timeout_s: float) -> bool:
        """Wait until the pane has written something after `output_version` was `since`."""
        with self._output:
            return self._output.wait_for(
                lambda: self._versions[pane_id] != since or self.closed, timeout_s
            )

    def close(self) -> None:
        self._closed.set()
        stdin = self._process.stdin
        try:
            if stdin is not None:
                stdin.close()
        except OSError:
            pass
        if self._process.poll() is None:
            self._process.terminate()
        self._fail_pending("the control connection closed")

    # The reader thread.

    def _read(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        try:
            self._read_blocks(stdout)
        except (OSError, ValueError):
            pass
        finally:
            self._closed.set()
            self._fail_pending("tmux ended the control connection")
            self._process.wait()

    def _read_blocks(self, stdout: IO[bytes]) -> None:
        block: list[str] | None = None
        frame = ""
        for raw in stdout:
            line = raw.decode("utf-8", "backslashreplace").rstrip("\n")
            if block is not None:
                if line in (f"%end {frame}", f"%error {frame}"):
                    self._finish(block, error=line.startswith("%error"))
                    block = None
                else:
                    block.append(line)
            elif line.startswith("%begin "):
                block, frame = [], line[len("%begin ") :]
            elif line.startswith("%output "):
                self._bump(line.split(" ", 2)[1])
            elif line.startswith("%exit"):
                return

    def _finish(self, lines: list[str], error: bool) -> None:
        with self._queue_lock:
            pending = self._pending.popleft() if self._pending else None
        if pending is None:
            return
        # Trimmed as libtmux trims a forked client's output: the same answer either way.
        if error:
            pending.result = ControlResult([], [line for line in lines if line], 1)
        else:
            while lines and lines[-1] == "":
                lines.pop()
            pending.result = ControlResult(lines, [], 0)
        pending.done.set()

    def _bump(self, pane_id: str) -> None:
        with self._output:
            self._versions[pane_id] += 1
            self._output.notify_all()

    def _fail_pending(self, reason: str) -> None:
        with self._queue_lock:
            pending, self._pending = list(self._pending), collections.deque()
        for item in pending:
            item.error = reason
            item.done.set()
        with self._output:
            self._output.notify_all()


class ControlledServer(libtmux.Server):
    """libtmux's server whose control-safe commands (see `control_line`) go over one
    control-mode connection to the session `session_name`; everything else, and everything
    while no connection stands (no session yet, tmux restarting), forks a client as before."""

    def __init__(self, *args: Any, session_name: str = "agent", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_name = session_name
        self._connection: ControlConnection | None = None
        self._connect_lock = threading.Lock()
        self._connecting = False
        self._closed = False
        self._retry_at = 0.0

    def cmd(self, cmd: str, *args: Any, target: str | int | None = None) -> Any:
        arguments = tuple(str(arg) for arg in args)
        if target is not None:
            arguments = ("-t", str(target), *arguments)
        line = control_line(cmd, arguments)
        connection = self._connection
        if line is not None and connection is not None:
            try:
                if connection.closed:
                    raise ControlClosed("tmux ended it")
                return connection.run(line)
            except ControlClosed as error:
                self._forget(connection, str(error))
                if error.written and cmd == "send-keys":
                    # tmux may have pressed the keys: not again. The caller sees a failure.
                    return ControlResult([], [f"unknown whether the keys were sent: {error}"], 1)
        result = super().cmd(cmd, *args, target=target)
        if line is not None and result.returncode == 0:
            # A tmux server answers: connect (a client that attached while a server was
            # still starting could make that server exit empty).
            self._connect_soon()
        return result

    def _forget(self, connection: ControlConnection, reason: str) -> None:
        with self._connect_lock:
            if self._connection is not connection:
                return  # another thread saw it first
            self._connection = None
        connection.close()
        log.info("tmux control connection lost (%s); forking tmux clients until a new one", reason)

    def output_version(self, pane_id: str) -> int | None:
        """A counter of the pane's output, None while no control connection stands."""
        connection = self._connection
        if connection is None or connection.closed:
            return None
        return connection.output_version(pane_id)

    def wait_for_output(self, pane_id: str, since: int | None, timeout_s: float) -> None:
        """Sleep up to `timeout_s`, waking early when the pane writes after `since`."""
        connection = self._connection
        if since is None or connection is None or connection.closed:
            time.sleep(timeout_s)
            return
        connection.wait_for_output(pane_id, since, timeout_s)

    def close(self) -> None:
        """End the connection for good: commands fork from now on."""
        with self._connect_lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _connect_soon(self) -> None:
        """Make a connection in the background (not sooner than a second after a failed
        try), so that no command ever waits for one to start."""
        with self._connect_lock:
            standing = self._connection is not None and not self._connection.closed
            if self._closed or standing or self._connecting:
                return
            if time.monotonic() >= self._retry_at:
                self._connecting = True
                threading.Thread(target=self._connect, name="tmux-connect", daemon=True).start()

    def _connect(self) -> None:
        candidate = ControlConnection(self._control_argv())
        attached = candidate.wait_attached(ANSWER_TIMEOUT_S)
        if not attached:
            candidate.close()
        with self._connect_lock:
            if attached and self._closed:
                candidate.close()
            elif attached:
                self._connection = candidate
            else:
                self._retry_at = time.monotonic() + RECONNECT_AFTER_S
            self._connecting = False

    def _control_argv(self) -> list[str]:
        argv = [str(self.tmux_bin or "tmux")]
        if self.socket_path:
            argv.append(f"-S{self.socket_path}")
        elif self.socket_name:
            argv.append(f"-L{self.socket_name}")
        if self.config_file:
            argv.append(f"-f{self.config_file}")
        return [*argv, "-C", "attach-session", "-t", f"={self.session_name}"]
