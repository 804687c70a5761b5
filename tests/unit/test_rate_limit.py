"""The pure parts of the API's limits: the sliding window, the per-key counter, the repeated
log line filter."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agentvisor.core.rate_limit import Pacer, PerKeyCounter, SlidingWindow
from agentvisor.server.api.limits import FairShare
from agentvisor.server.log_limit import RepeatFilter


def test_a_window_lets_the_limit_through_then_says_how_long_to_wait():
    window = SlidingWindow(3, 60.0)
    assert [window.hit("a", t) for t in (0.0, 10.0, 20.0)] == [None, None, None]
    assert window.hit("a", 30.0) == pytest.approx(30.0)  # the hit at 0 leaves at 60
    assert window.used("a", 30.0) == 3  # the refused hit is not counted


def test_a_window_frees_its_oldest_hit_as_it_slides():
    window = SlidingWindow(2, 60.0)
    window.hit("a", 0.0)
    window.hit("a", 50.0)
    assert window.hit("a", 59.0) is not None
    assert window.hit("a", 60.0) is None
    assert window.hit("a", 61.0) == pytest.approx(49.0)


def test_keys_have_windows_of_their_own():
    window = SlidingWindow(1, 60.0)
    assert window.hit("a", 0.0) is None
    assert window.hit("b", 0.0) is None
    assert window.hit("a", 1.0) is not None


def test_a_clock_moved_backwards_frees_nothing():
    window = SlidingWindow(1, 60.0)
    window.hit("a", 1000.0)
    assert window.hit("a", 0.0) is not None


def test_a_limit_of_zero_refuses_every_hit():
    assert SlidingWindow(0, 60.0).hit("a", 0.0) == 60.0


def test_a_counter_refuses_past_the_per_key_limit_and_the_total():
    counter = PerKeyCounter(per_key=2, total=3)
    assert counter.acquire("a") is None
    assert counter.acquire("a") is None
    assert counter.acquire("a") == "key"
    assert counter.acquire("b") is None
    assert counter.acquire("c") == "total"
    counter.release("a")
    assert counter.acquire("c") is None
    assert counter.count() == 3 and counter.count("a") == 1


def test_releasing_what_was_never_taken_changes_nothing():
    counter = PerKeyCounter(per_key=1, total=1)
    counter.release("x")
    assert counter.count() == 0
    assert counter.acquire("x") is None


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _records(repeat: RepeatFilter, n: int, msg: str = "refused %s") -> list[str]:
    passed = []
    for i in range(n):
        record = logging.LogRecord("agentvisor.x", logging.WARNING, "f", 1, msg, (i,), None)
        if repeat.filter(record):
            passed.append(record.getMessage())
    return passed


def test_the_same_log_line_passes_n_times_then_once_more_saying_the_rest_are_dropped():
    clock = _Clock()
    repeat = RepeatFilter(limit=3, interval_s=10.0, monotonic=clock)
    passed = _records(repeat, 1000)
    assert len(passed) == 4
    assert "the rest are dropped" in passed[3]
    clock.now = 11.0
    [after] = _records(repeat, 1)
    assert "996 more like this were dropped" in after


def test_other_log_lines_are_not_held_back_by_a_flood_of_one():
    repeat = RepeatFilter(limit=2, interval_s=10.0, monotonic=_Clock())
    _records(repeat, 100, "flood %s")
    assert len(_records(repeat, 2, "other %s")) == 2


def test_a_sandbox_with_many_waiting_requests_gets_no_more_turns_than_one_with_one():
    order: list[str] = []

    async def scenario() -> None:
        fair = FairShare(slots=1)

        async def request(key: str, name: str) -> None:
            await fair.acquire(key)
            try:
                order.append(name)
                await asyncio.sleep(0)
            finally:
                fair.release()

        tasks = [asyncio.create_task(request("a", f"a{i}")) for i in range(10)]
        await asyncio.sleep(0)  # a0 runs, a1..a9 wait
        tasks.append(asyncio.create_task(request("b", "b0")))
        await asyncio.gather(*tasks)
        assert fair.active == 0

    asyncio.run(scenario())
    assert order.index("b0") <= 3  # after a turn or two of a's, not after all nine


def test_a_request_cancelled_while_waiting_gives_its_turn_back():
    async def scenario() -> None:
        fair = FairShare(slots=1)
        await fair.acquire("a")
        waiting = asyncio.create_task(fair.acquire("b"))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        fair.release()
        assert fair.active == 0
        await asyncio.wait_for(fair.acquire("c"), 1)

    asyncio.run(scenario())


def test_a_pacer_lets_a_burst_through_then_spaces_requests_at_the_rate():
    pacer = Pacer(rate=10.0, burst=5)
    waits = [pacer.delay("a", 0.0) for _ in range(8)]
    assert waits[:5] == [0.0] * 5
    assert waits[5:] == pytest.approx([0.1, 0.2, 0.3])
    assert pacer.delay("b", 0.0) == 0.0  # another key is not held back
    assert pacer.delay("a", 10.0) == 0.0  # idle long enough: a full bucket again
