"""What the shim types for a message: sanitised, marked, and safe as a tmux argument."""

from __future__ import annotations

from agent_shim.text import (
    SEND_KEYS_MAX_CHARS,
    marker_prefix,
    marker_token,
    needs_paste,
    prepare_body,
    sanitise,
    send_keys_literal_arg,
)


def test_newlines_and_tabs_stay_other_controls_become_caret_notation():
    assert sanitise("a\tb\nc") == "a\tb\nc"
    assert sanitise("\x1b[31mred\x1b[0m") == "^[[31mred^[[0m"
    assert sanitise("bell\x07 nul\x00 del\x7f") == "bell^G nul^@ del^?"


def test_crlf_becomes_lf_and_a_bare_cr_is_shown():
    assert sanitise("one\r\ntwo\rthree") == "one\ntwo^Mthree"


def test_clipboard_and_paste_end_sequences_are_defused():
    body = "x\x1b]52;c;ZXZpbA==\x07y\x1b[201~z"
    assert sanitise(body) == "x^[]52;c;ZXZpbA==^Gy^[[201~z"
    assert "\x1b" not in sanitise(body)


def test_c1_controls_and_lone_surrogates_are_made_visible():
    assert sanitise("a\x9bb") == "a<U+009B>b"
    assert sanitise("a\ud800b") == "a\ufffdb"
    sanitise("a\ud800b").encode("utf-8")  # now encodable


def test_printable_unicode_is_untouched():
    text = "héllo ❯ 日本語 — “quotes” 🙂"
    assert sanitise(text) == text


def test_prepare_body_drops_trailing_blank_space_only():
    assert prepare_body("  keep leading\nlines\n\n  ") == "  keep leading\nlines"


def test_marker_token_is_bracketed_so_prefixes_do_not_match():
    assert marker_token("av-1z") == "[av-1z]"
    assert marker_token("av-1z") not in marker_prefix("av-1z0")
    assert marker_prefix("av-1z") == "[av-1z] "


def test_multi_line_tabbed_or_long_text_goes_through_a_paste_buffer():
    assert not needs_paste("[av-1] one short line")
    assert needs_paste("two\nlines")
    assert needs_paste("a\ttab")
    assert needs_paste("x" * (SEND_KEYS_MAX_CHARS + 1))


def test_a_trailing_semicolon_is_escaped_for_tmux_only_at_the_end():
    assert send_keys_literal_arg("a;b") == "a;b"
    assert send_keys_literal_arg("a;") == "a\\;"
    assert send_keys_literal_arg(";") == "\\;"
    assert send_keys_literal_arg("a\\;") == "a\\\\;"
