"""What the CLI prints of an agent's text: visible, never acting on the terminal."""

from __future__ import annotations

import io
import json

from rich.text import Text

from agentvisor.cli.render import SafeConsole, cell, json_text, short, visible


def test_control_characters_are_shown_as_escapes():
    assert visible("a\x1b[2Jb\x07c\x7fd\x9be\x00") == "a\\x1b[2Jb\\x07c\\x7fd\\x9be\\x00"
    assert visible("rtl\u202eevil\u200b\u2066") == "rtl\\u202eevil\\u200b\\u2066"
    assert visible("one\ntwo\tthree") == "one\\x0atwo\\x09three"
    assert visible("one\ntwo\tthree", keep_lines=True) == "one\ntwo\tthree"
    assert visible("héllo ❯ 日本語 🙂") == "héllo ❯ 日本語 🙂"


def test_a_table_cell_is_one_visible_line_cut_to_its_width():
    assert short("a\nb\x1b", 60) == "a ⏎ b\\x1b"
    assert short("x" * 100, 10) == "x" * 9 + "…"
    assert cell(None).plain == "-"
    assert cell("[red]x[/red]\x1b").plain == "[red]x[/red]\\x1b"


def test_the_console_interprets_no_markup_and_sends_no_control_character():
    out = io.StringIO()
    console = SafeConsole(file=out, width=200, force_terminal=False)
    console.print("[red]RED[/red] [link=https://evil.example]x[/link] :smile: \x1b]52;c;AA==\x07")
    console.print(Text("styled \x1b[2J"))
    assert out.getvalue() == (
        "[red]RED[/red] [link=https://evil.example]x[/link] :smile: \\x1b]52;c;AA==\\x07\n"
        "styled \\x1b[2J\n"
    )


def test_json_output_escapes_what_json_itself_would_print_raw():
    data = {"body": "\x1b]0;t\x07 \x9b31m \u202e \x7f é"}
    text = json_text(data)
    assert all(not (0x7F <= ord(c) < 0xA0) and c not in "\x1b\x07\u202e" for c in text)
    assert json.loads(text) == data  # the same value
