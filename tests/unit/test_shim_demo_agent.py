"""The demo agent's input box: typed keys and bracketed pastes make one prompt per Enter."""

from __future__ import annotations

from agent_shim.demo_agent import Echo, LineEditor, Submit, split_header, split_marker


def prompts(events: list[Echo | Submit]) -> list[str]:
    return [event.prompt for event in events if isinstance(event, Submit)]


def test_typed_text_and_enter_submit_one_prompt():
    editor = LineEditor()
    events = editor.feed("[av-1] hello\r")
    assert prompts(events) == ["[av-1] hello"]
    assert "".join(e.text for e in events if isinstance(e, Echo)) == "[av-1] hello\n"


def test_a_multi_line_paste_then_enter_is_one_prompt():
    editor = LineEditor()
    events = editor.feed("[av-2] \x1b[200~line 1\rline 2\rline 3\x1b[201~\r")
    assert prompts(events) == ["[av-2] line 1\nline 2\nline 3"]


def test_a_paste_split_across_reads_is_reassembled():
    editor = LineEditor()
    text = "[av-3] \x1b[200~first\rsecond\x1b[201~\r"
    events = []
    for i in range(len(text)):  # the worst case: one character per read
        events += editor.feed(text[i])
    assert prompts(events) == ["[av-3] first\nsecond"]


def test_enter_inside_a_paste_does_not_submit():
    editor = LineEditor()
    assert prompts(editor.feed("\x1b[200~a\r\rb\r")) == []
    assert prompts(editor.feed("\x1b[201~\r")) == ["a\n\nb\n"]


def test_long_pastes_are_echoed_folded():
    editor = LineEditor()
    events = editor.feed("\x1b[200~" + "x\r" * 300 + "\x1b[201~")
    assert Echo("[pasted text: 301 lines, 600 chars]") in events


def test_other_keys_and_backspace_and_ctrl_c():
    editor = LineEditor()
    assert prompts(editor.feed("ab\x1b[Dc\x7f\r")) == ["ab"]  # left arrow ignored
    assert prompts(editor.feed("junk\x03ok\r")) == ["ok"]


def test_the_marker_is_split_from_the_prompt():
    assert split_marker("[av-1z9] # agentvisor briefing") == ("av-1z9", "# agentvisor briefing")
    assert split_marker("no marker") == (None, "no marker")


def test_the_header_gives_marker_sender_and_body():
    assert split_header("[av-1z9] from tester: Completion report from tester: ok") == (
        "av-1z9",
        "tester",
        "Completion report from tester: ok",
    )
    assert split_header("[av-1z9] old shim, no sender") == ("av-1z9", None, "old shim, no sender")
