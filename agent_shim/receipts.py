"""What the agent CLI's own hooks said about its turns: `agent hook KIND` appends a receipt (one
JSON object a line) to a file in the sandbox, and the shim reads them to know when a prompt was
submitted and when the turn it started ended, instead of guessing from the screen.

Folding receipts into a `TurnState` is pure; `Receipts` only reads the file's new lines.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

DEFAULT_RECEIPTS = "/tmp/agentvisor-hooks.jsonl"  # /tmp: a new container starts with none
# The hooks installed in Claude Code's settings (claude_setup.py), by the receipt kind.
HOOK_EVENTS = {
    "session_start": "SessionStart",
    "prompt_submitted": "UserPromptSubmit",
    "stop": "Stop",
    "stop_failure": "StopFailure",
    "notification": "Notification",
}
TURN_ENDS = frozenset({"stop", "stop_failure", "session_start"})
MAX_MARKERS = 2000
PROMPT_HEAD_CHARS = 200
_MARKER = re.compile(r"^\s*\[(av-[0-9a-z]+)\]")


def receipt(kind: str, payload: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The receipt of one hook call: what the shim needs from the hook's JSON, not all of it
    (a prompt may be a 256 KiB briefing)."""
    line: dict[str, Any] = {"kind": kind, "at": now}
    for key in ("session_id", "prompt_id"):
        if isinstance(payload.get(key), str):
            line[key] = payload[key]
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        found = _MARKER.match(prompt)
        if found:
            line["marker"] = found.group(1)
        line["prompt_head"] = prompt[:PROMPT_HEAD_CHARS]
    for key in ("error", "message", "notification_type", "source"):
        if isinstance(payload.get(key), str):
            line[key] = payload[key][:PROMPT_HEAD_CHARS]
    if isinstance(payload.get("last_assistant_message"), str):
        line["last_message"] = payload["last_assistant_message"][:PROMPT_HEAD_CHARS]
    return line


def append(path: str | Path, line: Mapping[str, Any]) -> None:
    """Append one receipt in a single write (O_APPEND: concurrent hooks never interleave)."""
    data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, data)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class TurnState:
    """The agent CLI's turn as its receipts tell it."""

    seen: bool = False  # any receipt at all: the hooks work
    in_turn: bool = False  # a prompt was submitted and its turn has not ended
    turn_started_at: float | None = None
    attention: str | None = None  # a notification during the open turn (e.g. a permission ask)
    submitted: tuple[str, ...] = ()  # markers of submitted prompts, oldest first

    def was_submitted(self, marker: str) -> bool:
        return marker in self.submitted


def fold(state: TurnState, line: Mapping[str, Any]) -> TurnState:
    """The state after one more receipt."""
    kind = line.get("kind")
    at = line.get("at") if isinstance(line.get("at"), int | float) else None
    if kind == "prompt_submitted":
        submitted = state.submitted
        marker = line.get("marker")
        if isinstance(marker, str) and marker not in submitted:
            submitted = (*submitted, marker)[-MAX_MARKERS:]
        return replace(
            state,
            seen=True,
            in_turn=True,
            turn_started_at=at,
            attention=None,
            submitted=submitted,
        )
    if kind in TURN_ENDS:
        return replace(state, seen=True, in_turn=False, turn_started_at=None, attention=None)
    if kind == "notification":
        message = line.get("message") or line.get("notification_type") or "needs attention"
        return replace(state, seen=True, attention=str(message) if state.in_turn else None)
    return replace(state, seen=True)


def fold_all(lines: Iterable[Mapping[str, Any]], state: TurnState | None = None) -> TurnState:
    state = state or TurnState()
    for line in lines:
        state = fold(state, line)
    return state


class Receipts:
    """The receipts file, read incrementally; thread-safe. A file that shrank (a new one) is
    read again from its start."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._state = TurnState()
        self._lock = threading.Lock()

    def refresh(self) -> TurnState:
        """Read the lines appended since the last call; the state after them."""
        with self._lock:
            try:
                with open(self.path, "rb") as file:
                    size = os.fstat(file.fileno()).st_size
                    if size < self._offset:
                        self._offset, self._state = 0, TurnState()
                    file.seek(self._offset)
                    data = file.read(size - self._offset)
            except FileNotFoundError:
                return self._state
            complete = data.rfind(b"\n") + 1  # a line still being written waits
            self._offset += complete
            for raw in data[:complete].splitlines():
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(line, dict):
                    self._state = fold(self._state, line)
            return self._state
