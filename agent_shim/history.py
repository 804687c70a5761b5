"""The agent's pane history across restarts of its CLI. tmux clears the visible screen when it
respawns a pane, so the shim saves that screen at the respawn and readers splice it back in.

The respawned CLI first prints a seam line with the restart's id (`RESTART_WRAPPER`); a saved
screen goes back right above its seam, wherever tmux's history keeps it, at most once. A seam
that tmux no longer has (history trimmed or cleared, another tmux server) takes its screen
with it: nothing is ever shown twice, and nothing older than tmux's own history comes back.
`python3 -m agent_shim.history` prints the spliced history (what `agentvisor logs` reads).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `agentvisor logs` runs this module in the sandbox: no libtmux import cost
    import libtmux

HISTORY_LIMIT = 100_000  # lines of scrollback: the evidence that a marker was typed
SEAM_TEXT = "[agentvisor: the agent CLI restarted here (restart {restart_id})]"
_SEAM = re.compile(r"\[agentvisor: the agent CLI restarted here \(restart ([0-9a-f]{12})\)\]$")
# Runs the CLI's argv after printing the seam line ($0) on the cleared screen. No argument
# ends with ";" (tmux would take it for a command separator).
RESTART_WRAPPER = ("/bin/sh", "-c", 'printf "%s\\n" "$0"; exec "$@"')


def new_restart_id() -> str:
    return uuid.uuid4().hex[:12]


def seam_line(restart_id: str) -> str:
    return SEAM_TEXT.format(restart_id=restart_id)


def respawn_argv(restart_id: str, command: Sequence[str]) -> list[str]:
    """The argv a respawned pane runs: the seam line, then the CLI itself."""
    return [*RESTART_WRAPPER, seam_line(restart_id), *command]


@dataclass(frozen=True)
class SavedScreen:
    """The screen a dead CLI left, as tmux showed it just before the respawn cleared it."""

    restart_id: str
    lines: tuple[str, ...]


def screen_to_save(restart_id: str, captured: Sequence[str]) -> SavedScreen:
    """A captured screen without the blank rows below its last output."""
    lines = list(captured)
    while lines and not lines[-1].strip():
        lines.pop()
    return SavedScreen(restart_id, tuple(lines))


def splice(history: Sequence[str], screens: Iterable[SavedScreen]) -> list[str]:
    """`history` (captured lines, oldest first) with each saved screen put back right above
    its seam line. A screen whose seam is not in `history` is left out, and no screen is put
    in twice (a second line that looks like its seam gets nothing)."""
    by_id = {screen.restart_id: screen for screen in screens}
    spliced: list[str] = []
    for line in history:
        found = _SEAM.search(line)
        screen = by_id.pop(found.group(1), None) if found else None
        if found is None or screen is None:
            spliced.append(line)
            continue
        before = line[: found.start()]
        if before:  # the last history line was a wrapped one that -J joined to the seam
            spliced.append(before)
        spliced.extend(screen.lines)
        spliced.append(found.group(0))
    return spliced


class SavedScreens:
    """The saved screens, one JSON line each in an append-only file; trimmed to the newest
    `keep_lines` lines of screens once it holds twice that (tmux keeps no more either)."""

    def __init__(self, path: Path, keep_lines: int = HISTORY_LIMIT) -> None:
        self.path = path
        self.keep_lines = keep_lines
        self._lock = threading.Lock()

    def save(self, screen: SavedScreen) -> None:
        record = json.dumps({"restart": screen.restart_id, "lines": list(screen.lines)})
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_synced(self.path, "a", record + "\n")
            screens = self.load()
            if sum(len(s.lines) for s in screens) > 2 * self.keep_lines:
                self._rewrite(_newest(screens, self.keep_lines))

    def load(self) -> list[SavedScreen]:
        """The saved screens, oldest first; a line cut short by a crash is skipped."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        screens = []
        for raw in text.splitlines():
            try:
                record = json.loads(raw)
                screen = SavedScreen(str(record["restart"]), tuple(map(str, record["lines"])))
            except (ValueError, KeyError, TypeError):
                continue
            screens.append(screen)
        return screens

    def _rewrite(self, screens: list[SavedScreen]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        text = "".join(
            json.dumps({"restart": s.restart_id, "lines": list(s.lines)}) + "\n" for s in screens
        )
        _write_synced(temporary, "w", text)
        os.replace(temporary, self.path)


def _newest(screens: list[SavedScreen], keep_lines: int) -> list[SavedScreen]:
    kept: list[SavedScreen] = []
    total = 0
    for screen in reversed(screens):
        total += len(screen.lines)
        if kept and total > keep_lines:
            break
        kept.append(screen)
    return kept[::-1]


def _write_synced(path: Path, mode: str, text: str) -> None:
    with open(path, mode, encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def capture_spliced(
    server: libtmux.Server, target: str, screens: SavedScreens | None, lines: int = 0
) -> list[str]:
    """The pane's history and screen (the last `lines` lines of history, all for 0) with the
    saved screens spliced in. tmux is read before the file: a screen saved meanwhile belongs to
    a respawn that this capture may not show yet, never to one shown twice."""
    start = "-" if lines <= 0 else f"-{lines}"
    result = server.cmd("capture-pane", "-p", "-J", "-S", start, target=target)
    if result.returncode != 0:
        raise HistoryError(" ".join(result.stderr) or f"tmux exit {result.returncode}")
    captured = list(result.stdout)
    return splice(captured, screens.load()) if screens is not None else captured


class HistoryError(Exception):
    """tmux could not read the pane (no server, no session)."""


def default_screens_path(env: Mapping[str, str]) -> Path:
    """AGENTVISOR_SHIM_SCREENS, else `screens` beside the delivery journal (in the agent's
    home, whose volume outlives the container; a new tmux server has none of the seams)."""
    explicit = env.get("AGENTVISOR_SHIM_SCREENS")
    if explicit:
        return Path(explicit)
    journal = env.get("AGENTVISOR_SHIM_JOURNAL")
    if journal:
        return Path(journal).parent / "screens"
    home = env.get("HOME", str(Path.home()))
    return Path(home, ".local", "state", "agentvisor-shim", "screens")


def tmux_argv(env: Mapping[str, str]) -> list[str]:
    """`tmux` on the shim's server (AGENTVISOR_TMUX_SOCKET: a path or a name)."""
    socket = env.get("AGENTVISOR_TMUX_SOCKET") or None
    if not socket:
        return ["tmux"]
    return ["tmux", "-S" if "/" in socket else "-L", socket]


def read_history(env: Mapping[str, str], session: str, lines: int = 0) -> list[str]:
    """`capture_spliced` for a reader outside the shim, on a forked tmux client (libtmux's
    import alone would double the time `agentvisor logs` takes)."""
    start = "-" if lines <= 0 else f"-{lines}"
    argv = [*tmux_argv(env), "capture-pane", "-p", "-J", "-S", start, "-t", f"={session}:^"]
    result = subprocess.run(argv, capture_output=True, check=False)
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()
        raise HistoryError(detail or f"tmux exit {result.returncode}")
    captured = result.stdout.decode(errors="backslashreplace").split("\n")
    while captured and captured[-1] == "":
        captured.pop()
    return splice(captured, SavedScreens(default_screens_path(env)).load())  # after tmux


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m agent_shim.history",
        description="Print the agent's pane history, the screens lost at CLI restarts included.",
    )
    parser.add_argument("--lines", type=int, default=0, help="the last LINES lines (0: all)")
    parser.add_argument("--session", default="agent", help="the agent's tmux session")
    args = parser.parse_args(argv)
    try:
        lines = read_history(os.environ, args.session, args.lines)
    except HistoryError as error:
        print(f"no agent pane: {error}", file=sys.stderr)
        return 1
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
