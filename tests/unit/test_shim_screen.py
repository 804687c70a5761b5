"""Reading agent screens: ready, busy, text left in the input box, usage limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from agent_shim.profiles import load_profile
from agent_shim.screen import (
    UsageLimitGate,
    find_usage_limit,
    is_ready,
    parse_reset_at,
    pending_marker,
)

CLAUDE = load_profile("claude", {})
DEMO = load_profile("demo", {})
PARIS = ZoneInfo("Europe/Paris")

CLAUDE_IDLE = """\
╭───────────────────────────────────────────╮
│ ✻ Welcome to Claude Code!                 │
╰───────────────────────────────────────────╯

> [av-1abc] hello

⏺ Hello! How can I help?

╭───────────────────────────────────────────╮
│ >                                         │
╰───────────────────────────────────────────╯
  ? for shortcuts
""".splitlines()

CLAUDE_WORKING = """\
> [av-1abc] hello

✻ Pondering… (3s · ↑ 12 tokens · esc to interrupt)

╭───────────────────────────────────────────╮
│ >                                         │
╰───────────────────────────────────────────╯
  ? for shortcuts
""".splitlines()

CLAUDE_NEW_STYLE_IDLE = """\
⏺ Done.

────────────────────────────────────────────
❯\u00a0
────────────────────────────────────────────
  ⏵⏵ bypass permissions on (shift+tab to cycle)
""".splitlines()

CLAUDE_TYPED = """\
⏺ Done.

╭───────────────────────────────────────────╮
│ > [av-2xyz] please fix the failing test   │
╰───────────────────────────────────────────╯
  ? for shortcuts
""".splitlines()

CLAUDE_TRUST_DIALOG = """\
 Do you trust the files in this folder?

 /workspace

 ❯ 1. Yes, proceed
   2. No, exit

 Enter to confirm · Esc to exit
""".splitlines()


def test_claude_is_ready_when_its_input_box_shows():
    assert is_ready(CLAUDE, CLAUDE_IDLE)
    assert is_ready(CLAUDE, CLAUDE_NEW_STYLE_IDLE)


def test_claude_is_busy_while_it_says_esc_to_interrupt():
    assert not is_ready(CLAUDE, CLAUDE_WORKING)


def test_a_selection_menu_cursor_is_not_the_input_prompt():
    assert not is_ready(CLAUDE, CLAUDE_TRUST_DIALOG)


def test_demo_is_ready_only_on_an_empty_prompt_at_the_bottom():
    assert is_ready(DEMO, ["banner", "demo> ", "", ""])
    assert not is_ready(DEMO, ["demo> [av-1] typing", ""])
    assert not is_ready(DEMO, ["demo> [av-1] DEMO:busy 3", "got av-1: 1 lines", "working"])


def test_text_typed_but_not_submitted_is_found_by_its_marker():
    assert pending_marker(CLAUDE, CLAUDE_TYPED) == "av-2xyz"
    assert pending_marker(DEMO, ["demo> [av-9] hello"]) == "av-9"


def test_a_submitted_message_is_not_pending():
    # The transcript still shows it, but the last input line is empty.
    assert pending_marker(CLAUDE, CLAUDE_IDLE) is None
    assert pending_marker(CLAUDE, CLAUDE_WORKING) is None
    assert pending_marker(DEMO, ["demo> [av-9] hello", "ok: received av-9", "demo> "]) is None
    assert pending_marker(DEMO, ["demo> [av-9] DEMO:busy 5", "working for 5 s"]) is None


@pytest.mark.parametrize(
    "notice",
    [
        "5-hour limit reached ∙ resets 3pm",
        "Claude usage limit reached. Your limit will reset at 3pm (Europe/Paris).",
        "Weekly limit reached ∙ resets Oct 6, 1pm",
        "Opus weekly limit reached ∙ resets Oct 9 at 5pm",
        "You've hit your limit · resets 2am (America/New_York)",
        "Claude AI usage limit reached|1760000000",
        "  ⎿  5-hour limit reached ∙ resets 11:30am",
        # Claude Code 2.1.330, as the real TUI shows it (tests/integration/test_claude_tui.py).
        "  ⎿  You've hit your 5-hour limit · resets 10:48am (UTC)",
        "  ⎿  You've hit your weekly limit · resets Oct 6, 1pm (UTC)",
    ],
)
def test_usage_limit_notices_are_recognised(notice: str):
    screen = ["> [av-1] go on", "", notice, "", "│ >  │", "  ? for shortcuts"]
    assert find_usage_limit(CLAUDE, screen) == notice.strip()


@pytest.mark.parametrize(
    "text",
    [
        "API Error: Rate limit reached, retrying in 5 seconds",
        "I set the loop limit to 5 hours",
        "the upload limit is reached when the file is over 5 MB",
        "API Error: Request rejected (429) · This request would exceed your account's rate limit.",
        "you've hit your stride, no limits here",
    ],
)
def test_ordinary_text_about_limits_is_not_a_usage_limit(text: str):
    assert find_usage_limit(CLAUDE, [text]) is None


def test_a_notice_quoted_in_a_message_the_shim_typed_is_not_the_agents_own():
    """The orchestrator's pane showing a teammate's report that quotes that teammate's limit
    notice: neither the header line nor the report's own lines pause the orchestrator."""
    report = "Blocked. My screen said:\nYou've hit your 5-hour limit · resets 3pm (UTC)\nbye"
    screen = [
        "❯ [av-7k2x] from developer: Blocked. My screen said:",
        "  You've hit your 5-hour limit · resets 3pm (UTC)",
        "  bye",
        "⏺ Noted, I will give the task to the tester.",
        "│ >  │",
    ]
    assert find_usage_limit(CLAUDE, screen, typed=[report]) is None
    inline = ["❯ [av-7k2x] from developer: You've hit your 5-hour limit · resets 3pm", "│ >  │"]
    assert find_usage_limit(CLAUDE, inline) is None
    # The CLI's own notice, below what was typed, still counts.
    own = [*screen, "  ⎿  You've hit your 5-hour limit · resets 10:48am (UTC)", "│ >  │"]
    assert find_usage_limit(CLAUDE, own, typed=[report]) == (
        "⎿  You've hit your 5-hour limit · resets 10:48am (UTC)"
    )


def test_a_notice_far_up_the_screen_is_not_current():
    screen = ["5-hour limit reached ∙ resets 3pm", *[f"line {i}" for i in range(20)]]
    assert find_usage_limit(CLAUDE, screen) is None


NOW = datetime(2025, 10, 1, 10, 0, tzinfo=PARIS)


@pytest.mark.parametrize(
    ("notice", "expected"),
    [
        ("5-hour limit reached ∙ resets 3pm", datetime(2025, 10, 1, 15, 0, tzinfo=PARIS)),
        ("resets 9am", datetime(2025, 10, 2, 9, 0, tzinfo=PARIS)),
        ("resets 12pm", datetime(2025, 10, 1, 12, 0, tzinfo=PARIS)),
        ("resets 12am", datetime(2025, 10, 2, 0, 0, tzinfo=PARIS)),
        ("resets 11:30am", datetime(2025, 10, 1, 11, 30, tzinfo=PARIS)),
        (
            "Your limit will reset at 3pm (America/New_York).",
            datetime(2025, 10, 1, 15, 0, tzinfo=ZoneInfo("America/New_York")),
        ),
        ("Weekly limit reached ∙ resets Oct 6, 1pm", datetime(2025, 10, 6, 13, 0, tzinfo=PARIS)),
        (
            "Opus weekly limit reached ∙ resets Oct 9 at 5pm",
            datetime(2025, 10, 9, 17, 0, tzinfo=PARIS),
        ),
        ("Claude AI usage limit reached|1760000000", datetime.fromtimestamp(1760000000, UTC)),
        (
            "You've hit your 5-hour limit · resets 10:48am (UTC)",
            datetime(2025, 10, 1, 10, 48, tzinfo=UTC),
        ),
    ],
)
def test_reset_times_are_read_in_the_named_or_local_zone(notice: str, expected: datetime):
    assert parse_reset_at(notice, NOW) == expected


@pytest.mark.parametrize(
    "notice", ["5-hour limit reached", "resets soon", "resets 13pm", "resets Foo 3, 1pm"]
)
def test_unreadable_reset_times_give_none(notice: str):
    assert parse_reset_at(notice, NOW) is None


def _screen(notice: str, extra: str = "") -> list[str]:
    return ["> [av-1] go on", notice, extra, "│ >  │", "  ? for shortcuts"]


def test_gate_holds_until_the_reset_time_then_lets_the_same_screen_pass():
    gate = UsageLimitGate(CLAUDE)
    screen = _screen("5-hour limit reached ∙ resets 3pm")
    assert gate.observe(screen, NOW)
    assert gate.paused_until == datetime(2025, 10, 1, 15, 1, tzinfo=PARIS)
    assert gate.observe(screen, NOW + timedelta(hours=4))
    assert not gate.observe(screen, NOW + timedelta(hours=5, minutes=2))
    assert not gate.observe(screen, NOW + timedelta(hours=6))  # waited out: not again


def test_gate_holds_again_for_a_new_notice():
    gate = UsageLimitGate(CLAUDE)
    assert gate.observe(_screen("5-hour limit reached ∙ resets 11am"), NOW)
    later = NOW + timedelta(hours=1, minutes=5)
    assert not gate.observe(_screen("5-hour limit reached ∙ resets 11am"), later)
    assert gate.observe(_screen("5-hour limit reached ∙ resets 4pm", "⏺ new"), later)


def test_gate_pauses_an_hour_when_the_notice_names_no_time():
    gate = UsageLimitGate(CLAUDE)
    screen = _screen("Claude usage limit reached.")
    assert gate.observe(screen, NOW)
    assert gate.observe(screen, NOW + timedelta(minutes=59))
    assert not gate.observe(screen, NOW + timedelta(minutes=61))


def test_gate_ignores_an_undated_notice_from_an_earlier_window():
    # Seen at 4pm, "resets 3pm" means tomorrow: 23 hours away, longer than a 5-hour window.
    gate = UsageLimitGate(CLAUDE)
    assert not gate.observe(
        _screen("5-hour limit reached ∙ resets 3pm"), datetime(2025, 10, 1, 16, 0, tzinfo=PARIS)
    )


def test_gate_opens_when_the_notice_leaves_the_screen():
    gate = UsageLimitGate(CLAUDE)
    assert gate.observe(_screen("5-hour limit reached ∙ resets 3pm"), NOW)
    assert not gate.observe(CLAUDE_IDLE, NOW)
    assert gate.notice is None
