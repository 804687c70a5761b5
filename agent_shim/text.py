"""Turning a message body into the exact text typed into an agent's pane.

Pure functions: no tmux, no I/O. The pane adapter (`pane.py`) and the tests call them.
"""

from __future__ import annotations

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


def prepare_body(body: str) -> str:
    """The body as typed: sanitised, without trailing blank space (a trailing newline would
    submit early in a pane without bracketed paste)."""
    return sanitise(body).rstrip()


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
