"""A scripted agent CLI for demos and tests: it runs in the pane like a real one (prompt,
bracketed paste, raw input) and follows an agentvisor briefing with real git and `agent` calls.

Prompts it understands (after the `[av-…] from SENDER: ` header the shim types first):
- `# agentvisor briefing: ROLE on PROJECT` as first line: do the role's scripted work;
- `DEMO:usage-limit TEXT`: print TEXT verbatim (to test usage-limit detection);
- `DEMO:busy SECONDS`: work that long without a prompt; `DEMO:exit`: exit;
- anything else: `ok: received MARKER`.
Test aid: with AGENTVISOR_DEMO_RECORD=FILE every submitted prompt is appended to FILE as a
JSON line `{"prompt": ...}`.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import shutil
import subprocess
import sys
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PROMPT = "demo> "
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
ECHO_PASTE_MAX_CHARS = 200
MARKER = re.compile(r"^\[(av-[0-9a-z]+)\] ?(?:from (?P<sender>[a-z][a-z0-9-]*): )?")
BRIEFING = re.compile(r"^#\s*agentvisor briefing:\s*(?P<role>[\w.-]+)\s+on\s+(?P<project>\S+)")


@dataclass(frozen=True)
class Echo:
    text: str


@dataclass(frozen=True)
class Submit:
    prompt: str


class LineEditor:
    """The input box: typed keys and bracketed pastes accumulate into one prompt, which an
    Enter outside a paste submits. Newlines inside a paste (tmux sends them as CR) stay part
    of the prompt. Pure: feed it decoded text, get echo and submit events back."""

    def __init__(self) -> None:
        self._prompt: list[str] = []
        self._paste: list[str] | None = None
        self._pending = ""  # an escape sequence cut by the end of a read

    def feed(self, text: str) -> list[Echo | Submit]:
        events: list[Echo | Submit] = []
        text, self._pending = self._pending + text, ""
        i = 0
        while i < len(text):
            if self._paste is not None:
                end = text.find(PASTE_END, i)
                if end < 0:
                    keep = _partial_suffix(text, PASTE_END)
                    self._paste.append(text[i : len(text) - keep])
                    self._pending = text[len(text) - keep :]
                    return events
                self._paste.append(text[i:end])
                events.append(self._end_paste())
                i = end + len(PASTE_END)
                continue
            char = text[i]
            if char == "\x1b":
                sequence = _escape_sequence(text, i)
                if sequence is None:
                    self._pending = text[i:]
                    return events
                if sequence == PASTE_START:
                    self._paste = []
                i += len(sequence)  # other keys (arrows, Escape) do nothing here
                continue
            i += 1
            if char in "\r\n":
                events.append(Echo("\n"))
                events.append(Submit("".join(self._prompt)))
                self._prompt = []
            elif char in "\x7f\b":
                if self._prompt:
                    self._prompt.pop()
                    events.append(Echo("\b \b"))
            elif char == "\x03":
                self._prompt = []
                events.append(Echo("^C\n" + PROMPT))
            elif char == "\t" or char >= " ":
                self._prompt.append(char)
                events.append(Echo(char))
        return events

    def _end_paste(self) -> Echo:
        pasted = "".join(self._paste or []).replace("\r\n", "\n").replace("\r", "\n")
        self._paste = None
        self._prompt.append(pasted)
        if "\n" not in pasted and len(pasted) <= ECHO_PASTE_MAX_CHARS:
            return Echo(pasted)
        return Echo(f"[pasted text: {pasted.count(chr(10)) + 1} lines, {len(pasted)} chars]")


def _escape_sequence(text: str, start: int) -> str | None:
    """The escape sequence at `start`, or None when the text ends inside it."""
    if start + 1 >= len(text):
        return None
    if text[start + 1] != "[":
        return text[start : start + 2]  # Alt+key
    for end in range(start + 2, len(text)):
        if "\x40" <= text[end] <= "\x7e":
            return text[start : end + 1]
    return None


def _partial_suffix(text: str, token: str) -> int:
    """How many characters at the end of `text` could start `token`."""
    for size in range(min(len(token) - 1, len(text)), 0, -1):
        if token.startswith(text[-size:]):
            return size
    return 0


# Acting on a prompt.


def split_marker(prompt: str) -> tuple[str | None, str]:
    marker, _, rest = split_header(prompt)
    return marker, rest


def split_header(prompt: str) -> tuple[str | None, str | None, str]:
    """The marker and sender of the header the shim typed, and the body after it."""
    found = MARKER.match(prompt)
    if not found:
        return None, None, prompt
    return found.group(1), found.group("sender"), prompt[found.end() :]


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(argv: Sequence[str]) -> str:
    """Run one step of the scripted work; its output, or RuntimeError saying what failed."""
    say("$ " + " ".join(argv))
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"{argv[0]}: {error}") from None
    output = (done.stdout + done.stderr).strip()
    if output:
        say(output)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with status {done.returncode}")
    return done.stdout.strip()


def agent_command() -> list[str]:
    found = shutil.which("agent")
    return [found] if found else [sys.executable, "-m", "agent_shim.agent_cli"]


COMPLETION = re.compile(r"^Completion report from (?P<role>[\w.-]+):")


def _completions_file() -> Path:
    return Path(os.environ.get("HOME", "/tmp")) / ".demo-completions"


def note_completion(role: str) -> None:
    """The demo orchestrator declares the project complete once every teammate reported done
    (what a real orchestrator would judge from the reports). Remembered across restarts."""
    record = _completions_file()
    done = set(record.read_text(encoding="utf-8").split()) if record.exists() else set()
    done.add(role)
    record.write_text("\n".join(sorted(done)) + "\n", encoding="utf-8")
    agent = agent_command()
    try:
        team = json.loads(run([*agent, "--json", "team"]))
    except (RuntimeError, ValueError) as error:
        say(f"demo: cannot read the team: {error}")
        return
    others = {a["role"] for a in team if a.get("role") != "orchestrator"}
    say(f"orchestrator: {len(done & others)} of {len(others)} teammates reported done")
    if others and others <= done:
        run([*agent, "done", f"PROJECT COMPLETE: all {len(others)} teammates reported done"])


def follow_briefing(role: str, project: str, text: str = "") -> None:
    if "DEMO:stall" in text:
        say(f"{role}: stalling on purpose (DEMO:stall in the briefing)")
        return
    if role == "orchestrator":
        _completions_file().unlink(missing_ok=True)
        say(f"orchestrator: coordinating {project}; waiting for the team's reports")
        return
    path = Path("demo") / f"{role}.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"# {role}\n\nDemo work by the {role} agent on {project}.\n", encoding="utf-8")
    git = ["git"]
    if not subprocess.run(
        ["git", "config", "user.email"], capture_output=True, check=False
    ).stdout.strip():
        git += [
            "-c",
            f"user.name=agentvisor demo {role}",
            "-c",
            f"user.email={role}@agentvisor.invalid",
        ]
    agent = agent_command()
    try:
        run([*git, "add", str(path)])
        run([*git, "commit", "-m", f"demo: {role} work"])
        commit = run(["git", "rev-parse", "--short", "HEAD"])
        run([*agent, "checkin", "1", f"demo {role} check-in"])
        run([*agent, "send", "orchestrator", f"{role}: committed {commit} ({path})"])
        run([*agent, "done", f"{role} finished: {path} committed as {commit}"])
    except RuntimeError as error:
        say(f"demo: step failed: {error}")


def handle(prompt: str) -> None:
    record = os.environ.get("AGENTVISOR_DEMO_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as file:
            file.write(json.dumps({"prompt": prompt}) + "\n")
    if not prompt.strip():
        return
    marker, sender, rest = split_header(prompt)
    say(
        f"got {marker or 'a prompt without marker'}: "
        f"{rest.count(chr(10)) + 1} lines, {len(rest)} chars"
    )
    if "DEMO:exit" in rest:
        say("bye")
        raise SystemExit(0)
    limit = re.search(r"DEMO:usage-limit (.+)", rest)
    if limit:
        say(limit.group(1))
        return
    busy = re.search(r"DEMO:busy (\d+(?:\.\d+)?)", rest)
    if busy:
        say(f"working for {busy.group(1)} s")
        time.sleep(float(busy.group(1)))  # the simulated work itself
        say("finished working")
        return
    briefing = BRIEFING.match(rest.split("\n", 1)[0].strip())
    if briefing:
        follow_briefing(briefing["role"], briefing["project"], rest)
        return
    completion = COMPLETION.match(rest.strip())
    # A report counts only from the teammate it names: the header says who really sent it.
    if (
        completion
        and sender in (None, completion["role"])
        and os.environ.get("AGENTVISOR_ROLE") == "orchestrator"
    ):
        note_completion(completion["role"])
        return
    say(f"ok: received {marker}")


# The terminal.


def _raw_mode(fd: int) -> list | None:
    """Keys one by one, no echo, no signals, CR kept as CR; output post-processing kept."""
    if not os.isatty(fd):
        return None
    saved = termios.tcgetattr(fd)
    attrs = termios.tcgetattr(fd)
    attrs[0] &= ~(termios.ICRNL | termios.INLCR | termios.IGNCR | termios.IXON)
    attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
    attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return saved


def main() -> int:
    fd = sys.stdin.fileno()
    saved = _raw_mode(fd)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    editor = LineEditor()
    try:
        sys.stdout.write("\x1b[?2004h")  # bracketed paste, as agent CLIs ask for
        say("agentvisor demo agent (scripted; type a prompt, paste a briefing)")
        sys.stdout.write(PROMPT)
        sys.stdout.flush()
        while True:
            data = os.read(fd, 65536)
            if not data:
                return 0
            for event in editor.feed(decoder.decode(data)):
                if isinstance(event, Echo):
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
                else:
                    handle(event.prompt)
                    sys.stdout.write(PROMPT)
                    sys.stdout.flush()
    finally:
        sys.stdout.write("\x1b[?2004l")
        sys.stdout.flush()
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


if __name__ == "__main__":
    sys.exit(main())
