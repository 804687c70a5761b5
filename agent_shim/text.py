"""Turning a message body into the exact text typed into an agent's pane.

Pure functions: no tmux, no I/O. The pane adapter (`pane.py`) and the tests call them.
"""

from __future__ import annotations

import re
import unicodedata

# Above this many characters even a single line goes through a tmux paste buffer:
# `send-keys` passes its text on the command line, and tmux limits one command to ~16 KB.
SEND_KEYS_MAX_CHARS = 1024


def _sanitise_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for code in range(0x20):
        if chr(code) not in "\n\t":
            table[code] = "^" + chr(code + 0x40)  # caret notation: ESC -> ^[, BEL -> ^G
    table[0x7F] = "^?"
    for code in range(0x80, 0xA0):  # C1 controls (0x9b is an 8-bit CSI on some terminals)
        table[code] = f"<U+{code:04X}>"
    for code in range(0xD800, 0xE000):  # lone surrogates (JSON "\ud800") cannot be encoded
        table[code] = "\ufffd"
    return table


_SANITISE = _sanitise_table()


def sanitise(text: str) -> str:
    """Make every control character except newline and tab visible, so nothing the body
    contains can act on the terminal or the agent CLI: ESC becomes `^[`, a bare CR `^M`,
    DEL `^?`, C1 controls `<U+009B>`. CRLF line ends become LF first. Because ESC is made
    visible, a body cannot end a bracketed paste early (`ESC [201~`) nor set the clipboard
    (`ESC ]52;`). Tmux key names (`C-c`, `Enter`) need no treatment: they are only ever
    typed as literal text."""
    return text.replace("\r\n", "\n").translate(_SANITISE)


def marker_token(marker: str) -> str:
    """The form of the marker searched for in the pane: bracketed, so `av-1z` never matches
    inside `av-1z0`."""
    return f"[{marker}]"


def marker_prefix(marker: str) -> str:
    """What starts every delivered text. It also keeps a body beginning with `/`, `!`, `#` or
    `@` from switching the agent CLI into a command mode."""
    return marker_token(marker) + " "


# Senders are role names, `operator` or `agentvisor` (agentvisor.core.team checks role names).
_SENDER = re.compile(r"[a-z][a-z0-9-]{0,39}")
UNKNOWN_SENDER = "unknown"


def sender_name(sender: object) -> str:
    """The sender as the header shows it: a plain name, never text that could act as more."""
    text = str(sender or "")
    return text if _SENDER.fullmatch(text) else UNKNOWN_SENDER


def message_header(marker: str, sender: object) -> str:
    """What starts every delivered message, typed by the shim and never taken from the body:
    `[av-1z3k] from developer: `. The body follows on the same line."""
    return f"{marker_prefix(marker)}from {sender_name(sender)}: "


_HEADER_START = "[av"
_INVISIBLE_LEAD = frozenset({"Cf", "Zs", "Zl", "Zp", "Mn", "Me"})


def _reads_as_header(line: str) -> bool:
    """Whether `line` begins, to a reader, like a header: `[av` after blanks, invisible
    characters and compatibility look-alikes (fullwidth `［ａｖ`) are set aside."""
    probe = unicodedata.normalize("NFKC", line)
    start = 0
    while start < len(probe) and (
        probe[start].isspace() or unicodedata.category(probe[start]) in _INVISIBLE_LEAD
    ):
        start += 1
    return probe[start : start + len(_HEADER_START)].casefold() == _HEADER_START


def escape_header_lookalikes(text: str) -> str:
    """Keep a body from imitating a header or holding a marker: every `[av-` becomes
    `[av\\-` (no marker token `[av-…]` can then appear in a body, so none can pass for a
    witness of another message in the pane), and every line that still reads like the start
    of a header gets a leading backslash. A body line can never begin the way a header does."""
    text = text.replace("[av-", "[av\\-")
    return "\n".join("\\" + line if _reads_as_header(line) else line for line in text.split("\n"))


def prepare_body(body: str) -> str:
    """The body as typed: sanitised, without trailing blank space (a trailing newline would
    submit early in a pane without bracketed paste), with no line that reads like a header."""
    return escape_header_lookalikes(sanitise(body).rstrip())


def needs_paste(text: str) -> bool:
    """Whether `text` must go through a paste buffer rather than `send-keys -l`: several lines
    (only a bracketed paste keeps them one prompt), a tab (typed, it would complete) or long."""
    return "\n" in text or "\t" in text or len(text) > SEND_KEYS_MAX_CHARS


def send_keys_literal_arg(text: str) -> str:
    """Protect `text` as the last argument of `tmux send-keys -l --`: tmux takes an argument
    ending in `;` as a command separator (and drops the `;`), but keeps `\\;` as a literal `;`."""
    if text.endswith(";"):
        return text[:-1] + "\\;"
    return text
