"""The pane history across CLI restarts: saved screens spliced back above their seams, once."""

from __future__ import annotations

from pathlib import Path

from agent_shim.history import (
    SavedScreen,
    SavedScreens,
    default_screens_path,
    respawn_argv,
    screen_to_save,
    seam_line,
    splice,
)

SEAM_A, SEAM_B = seam_line("aaaaaaaaaaaa"), seam_line("bbbbbbbbbbbb")


def test_a_saved_screen_goes_back_right_above_its_seam():
    history = ["old 1", "old 2", SEAM_A, "new 1"]
    screen = SavedScreen("aaaaaaaaaaaa", ("[av-1] from operator: hi", "Pane is dead"))
    assert splice(history, [screen]) == [
        "old 1",
        "old 2",
        "[av-1] from operator: hi",
        "Pane is dead",
        SEAM_A,
        "new 1",
    ]


def test_each_screen_is_put_back_once_even_where_its_seam_is_quoted_again():
    history = [SEAM_A, "x", SEAM_B, f"[av-2] from developer: I saw {SEAM_A}", SEAM_A]
    screens = [SavedScreen("aaaaaaaaaaaa", ("A",)), SavedScreen("bbbbbbbbbbbb", ("B",))]
    assert splice(history, screens).count("A") == 1
    assert splice(history, screens) == [
        "A",
        SEAM_A,
        "x",
        "B",
        SEAM_B,
        f"[av-2] from developer: I saw {SEAM_A}",
        SEAM_A,
    ]


def test_a_screen_whose_seam_tmux_no_longer_has_is_left_out():
    # History trimmed by its limit, cleared, or a new tmux server after the container's restart.
    assert splice(["fresh"], [SavedScreen("aaaaaaaaaaaa", ("[av-gone]",))]) == ["fresh"]


def test_a_seam_joined_to_a_wrapped_history_line_is_split_off():
    history = ["the end of a wrapped line" + SEAM_A, "new"]
    spliced = splice(history, [SavedScreen("aaaaaaaaaaaa", ("screen",))])
    assert spliced == ["the end of a wrapped line", "screen", SEAM_A, "new"]


def test_only_the_blank_rows_below_the_last_output_are_dropped_from_a_screen():
    saved = screen_to_save("aaaaaaaaaaaa", ["", "top", "", "bottom", "", "  "])
    assert saved.lines == ("", "top", "", "bottom")


def test_the_respawned_pane_prints_its_seam_then_execs_the_cli():
    argv = respawn_argv("aaaaaaaaaaaa", ("python3", "-m", "agent_shim.demo_agent"))
    assert argv[-4:] == [SEAM_A, "python3", "-m", "agent_shim.demo_agent"]
    assert not any(arg.endswith(";") for arg in argv)  # tmux would split the command there


def test_saved_screens_are_read_back_in_order_and_a_torn_last_line_is_skipped(tmp_path: Path):
    screens = SavedScreens(tmp_path / "state" / "screens")
    assert screens.load() == []
    first, second = SavedScreen("a" * 12, ("one",)), SavedScreen("b" * 12, ("two", ""))
    screens.save(first)
    screens.save(second)
    with open(screens.path, "a", encoding="utf-8") as file:
        file.write('{"restart": "cccccccccccc", "lines": ["cut sh')  # killed mid-write
    assert screens.load() == [first, second]


def test_the_file_is_trimmed_to_the_newest_screens_once_it_holds_twice_the_limit(
    tmp_path: Path,
):
    screens = SavedScreens(tmp_path / "screens", keep_lines=10)
    for index in range(8):
        screens.save(SavedScreen(f"{index:012x}", tuple(f"{index}.{n}" for n in range(3))))
    kept = screens.load()
    assert sum(len(s.lines) for s in kept) <= 2 * 10
    assert kept[-1].restart_id == f"{7:012x}"  # the newest always stays
    assert [s.restart_id for s in kept] == sorted(s.restart_id for s in kept)


def test_the_screens_live_beside_the_delivery_journal():
    assert default_screens_path({"HOME": "/home/agent"}) == Path(
        "/home/agent/.local/state/agentvisor-shim/screens"
    )
    assert default_screens_path({"AGENTVISOR_SHIM_JOURNAL": "/x/journal"}) == Path("/x/screens")
    assert default_screens_path({"AGENTVISOR_SHIM_SCREENS": "/y/s", "HOME": "/h"}) == Path("/y/s")
