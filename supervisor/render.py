"""Turning rows into what the CLI prints: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

# Pipes and logs get wide tables rather than 80 folded columns.
console = Console(width=None if sys.stdout.isatty() else 200, log_path=False)
err_console = Console(stderr=True, soft_wrap=True)


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


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        t.add_column(column, overflow="fold")
    count = 0
    for row in rows:
        t.add_row(*("-" if v is None else str(v) for v in row))
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


def short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    line = text.replace("\n", " ⏎ ")
    return line if len(line) <= width else line[: width - 1] + "…"


def visible(text: object, width: int = 60) -> str:
    """An agent's string for a table cell: control and bidi characters as `\\xNN`/`\\uNNNN`,
    no rich markup interpreted, cut to `width`."""
    from rich.markup import escape

    out = []
    for char in str(text):
        code = ord(char)
        if code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif 0x200B <= code <= 0x200F or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    line = "".join(out)
    return escape(line if len(line) <= width else line[: width - 1] + "…")
