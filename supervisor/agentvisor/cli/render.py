"""Turning rows into what the CLI prints: rich tables for people, JSON for scripts.

Much of what is printed comes from agents (bodies, notes, states, event data), so nothing
printed can act on the operator's terminal: Rich markup and emoji codes are never
interpreted, and control characters are shown as escapes (`visible`; docs/contracts.md).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Shown as `\xNN`: C0 controls, DEL, C1 controls.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
# Shown as `\uNNNN`: characters that reorder, hide or break text without being seen
# (zero-width, bidi controls and isolates, line and paragraph separators, BOM).
_INVISIBLES = {
    code: f"\\u{code:04x}"
    for code in (
        *range(0x200B, 0x2010),
        *range(0x2028, 0x202F),
        *range(0x2060, 0x2070),
        0x061C,
        0xFEFF,
    )
}
_VISIBLE = {**_CONTROLS, **_INVISIBLES}
_VISIBLE_KEEP_LINES = {code: text for code, text in _VISIBLE.items() if code not in (0x09, 0x0A)}


def visible(text: object, width: int | None = None, keep_lines: bool = False) -> str:
    """`text` with every control character (C0 with ESC, DEL, C1) as `\\xNN` and every
    invisible formatting character (bidi, zero-width, separators) as `\\uNNNN`, cut to
    `width`; `keep_lines` keeps newline and tab. What it returns cannot act on a terminal."""
    line = str(text).translate(_VISIBLE_KEEP_LINES if keep_lines else _VISIBLE)
    if width is not None and len(line) > width:
        line = line[: width - 1] + "…"
    return line


class SafeConsole(Console):
    """A Console that interprets no markup or emoji codes and prints every string with its
    control characters made visible (newlines and tabs kept). Rich renderables (tables)
    pass as they are: `table()` builds theirs from `visible` cells."""

    def __init__(self, **options: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **options)

    def print(self, *objects: Any, **options: Any) -> None:
        options.pop("markup", None)
        options.pop("emoji", None)
        super().print(*(_safe(o) for o in objects), markup=False, emoji=False, **options)

    def log(self, *objects: Any, **options: Any) -> None:
        options.pop("markup", None)
        options.pop("emoji", None)
        options.setdefault("_stack_offset", 2)
        super().log(*(_safe(o) for o in objects), markup=False, emoji=False, **options)


def _safe(value: Any) -> Any:
    if isinstance(value, Text):
        return Text(visible(value.plain, keep_lines=True), style=value.style)
    if isinstance(value, str):
        return Text(visible(value, keep_lines=True))
    return value


def cell(value: Any, width: int | None = None) -> Text:
    """A table cell: one line, control characters visible, no markup."""
    if value is None:
        return Text("-")
    text = value.plain if isinstance(value, Text) else str(value)
    return Text(visible(text, width))


# Pipes and logs get wide tables rather than 80 folded columns.
console = SafeConsole(width=None if sys.stdout.isatty() else 200, log_path=False)
err_console = SafeConsole(stderr=True, soft_wrap=True)


def when(epoch: float | None, now: float | None = None) -> str:
    """Local time plus a relative hint: '14:03:10 (in 4m)'."""
    if not epoch:
        return "-"
    now = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
    delta = epoch - now
    span = abs(delta)
    if span < 90:
        rel = f"{span:.0f}s"
    elif span < 5400:
        rel = f"{span / 60:.0f}m"
    elif span < 172800:
        rel = f"{span / 3600:.1f}h"
    else:
        rel = f"{span / 86400:.1f}d"
    return f"{stamp} ({'in ' + rel if delta > 0 else rel + ' ago'})"


# JSON escapes C0 controls itself; these it would print raw (ensure_ascii=False).
_JSON_EXTRA = {code: f"\\u{code:04x}" for code in (*range(0x7F, 0xA0), *_INVISIBLES)}


def json_text(data: Any) -> str:
    """`data` as indented JSON in which no character can act on a terminal: C0 controls are
    escaped by JSON itself, DEL, C1 and invisible formatting characters as `\\uNNNN` (still
    the same JSON value; they can only occur inside strings)."""
    return json.dumps(data, indent=2, ensure_ascii=False, default=str).translate(_JSON_EXTRA)


def print_json(data: Any) -> None:
    print(json_text(data))


def safe_table(title: str, **options: Any) -> Table:
    """A Rich table whose title cannot act on the terminal; give it `cell()`s."""
    return Table(title=cell(title), title_justify="left", **options)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = safe_table(title, show_lines=False)
    for column in columns:
        t.add_column(column, overflow="fold")
    count = 0
    for row in rows:
        t.add_row(*(cell(v) for v in row))
        count += 1
    if count == 0:
        console.print(f"{title}: none")
    else:
        console.print(t)


def listing(
    title: str,
    columns: Sequence[str],
    rows: Sequence[dict[str, Any]],
    cells: Callable[[dict[str, Any]], Sequence[Any]],
    as_json: bool,
) -> None:
    """A list command's output: the rows as JSON (`--json`), else a table of `cells(row)`."""
    if as_json:
        print_json(rows)
    else:
        table(title, columns, (cells(row) for row in rows))


def short(text: object, width: int = 60) -> str:
    """An agent's text on one line for a table cell: newlines as ` ⏎ `, everything else
    `visible`, cut to `width`."""
    if text is None or text == "":
        return ""
    return visible(str(text).replace("\r\n", "\n").replace("\n", " ⏎ "), width)
