"""The drills' pure parts: the kill plan a seed gives, percentiles, CPU time from /proc, and the
tally of each message from its two witnesses; and the CLI's one-line refusals."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agentvisor.drills.chaos import ChaosOptions
from agentvisor.drills.load import LoadOptions
from agentvisor.drills.tally import (
    KILL_KINDS,
    Sent,
    StoreRow,
    cpu_seconds,
    marker_counts,
    percentile,
    plan_kills,
    tally,
)
from agentvisor.errors import InvalidInput

ROLES = ["agent-0", "agent-1", "agent-2"]


def test_the_same_seed_gives_the_same_kill_plan_and_another_seed_another():
    one = plan_kills(42, ROLES, duration_s=120)
    assert one == plan_kills(42, ROLES, duration_s=120)
    assert one != plan_kills(43, ROLES, duration_s=120)


def test_every_kind_is_killed_once_before_any_is_killed_twice():
    plan = plan_kills(1, ROLES, duration_s=60, kills=9)
    kinds = [k.kind for k in plan]
    assert sorted(kinds[:4]) == sorted(KILL_KINDS)
    assert sorted(kinds[4:8]) == sorted(KILL_KINDS)
    assert len(plan) == 9


def test_kills_fall_inside_the_run_in_order_and_the_server_has_no_role():
    plan = plan_kills(5, ROLES, duration_s=30, first_s=3, mean_gap_s=2)
    assert len(plan) == 13  # one per mean gap of the 27 s after the first
    assert [k.at_s for k in plan] == sorted(k.at_s for k in plan)
    assert all(3 <= k.at_s <= 30 for k in plan)
    assert all((k.role is None) == (k.kind == "server") for k in plan)
    assert all(k.role in ROLES for k in plan if k.role is not None)


def test_a_plan_of_chosen_kinds_has_only_those():
    plan = plan_kills(3, ROLES, duration_s=60, kills=6, kinds=("shim", "cli"))
    assert {k.kind for k in plan} == {"shim", "cli"}
    with pytest.raises(ValueError, match="unknown kill kind"):
        plan_kills(3, ROLES, duration_s=60, kinds=("reboot",))


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def test_cpu_seconds_reads_utime_and_stime_after_a_command_name_with_spaces():
    stat = "1234 (python3 -m x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 5 0 99"
    assert cpu_seconds(stat, 100) == 3.0


def _sent(number: int, recipient: str) -> Sent:
    return Sent(number, 100 + number, f"av-{number:04d}", recipient)


def _delivered(created: float = 10.0, delivered: float = 10.5) -> StoreRow:
    return StoreRow("delivered", created, delivered)


def test_a_message_delivered_and_typed_once_in_its_own_pane_counts_exactly_once():
    sent = [_sent(1, "agent-0")]
    result = tally(sent, {101: _delivered()}, {"agent-0": ["[av-0001] from operator: hi"]})
    assert (result.delivered, result.exactly_once, result.lost) == (1, 1, 0)
    assert result.latencies_s == [0.5]
    assert result.ok


def test_a_marker_twice_in_its_pane_is_doubled_even_across_two_lives_of_the_pane():
    sent = [_sent(1, "agent-0")]
    panes = {"agent-0": ["[av-0001] hi", "new life: [av-0001] hi"]}
    result = tally(sent, {101: _delivered()}, panes)
    assert (result.doubled, result.exactly_once) == (1, 0)
    assert result.examples == {"doubled": [1]}
    assert not result.ok


def test_a_marker_in_another_agents_pane_is_the_wrong_pane():
    sent = [_sent(1, "agent-0")]
    panes = {"agent-0": ["[av-0001] hi"], "agent-1": ["[av-0001] hi"]}
    result = tally(sent, {101: _delivered()}, panes)
    assert (result.wrong_pane, result.exactly_once, result.delivered) == (1, 0, 1)


def test_lost_is_either_never_delivered_or_delivered_without_a_trace_in_the_pane():
    sent = [_sent(1, "agent-0"), _sent(2, "agent-0"), _sent(3, "agent-0")]
    store = {101: StoreRow("queued", 10.0, None), 102: _delivered()}  # 103: not in the store
    result = tally(sent, store, {"agent-0": ["nothing typed here"]})
    assert (result.lost, result.undelivered, result.unwitnessed) == (3, 2, 1)
    assert result.examples == {"undelivered": [1, 3], "unwitnessed": [2]}


def test_the_agents_reply_quoting_the_marker_is_not_counted_as_typed():
    assert marker_counts("av-0001", ["ok: received av-0001", "[av-0001] hi"]) == 1
    assert marker_counts("av-0001", ["[av-00012] hi"]) == 0


def test_bad_options_are_refused_before_anything_starts():
    with pytest.raises(InvalidInput, match="unknown kill kind"):
        ChaosOptions(kinds=("reboot",)).check()
    with pytest.raises(InvalidInput, match="--rate"):
        ChaosOptions(rate=0).check()
    with pytest.raises(InvalidInput, match="more than the drill can witness"):
        ChaosOptions(duration_s=600, rate=10, sandboxes=3).check()
    with pytest.raises(InvalidInput, match="messages per sandbox"):
        LoadOptions(sandboxes=1, messages=1000).check()


def test_an_unknown_kill_kind_is_one_line_on_stderr_and_exit_1():
    done = subprocess.run(
        [sys.executable, "-m", "agentvisor", "chaos", "--kinds", "server,reboot"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "unknown kill kind(s) reboot" in done.stderr
    assert "Traceback" not in done.stderr
