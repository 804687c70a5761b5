"""The scheduler over a real store: due check-ins fire once as messages, a recurring one keeps
its grid, an earlier check-in wakes the sleeping thread, stop() ends it, and a row that cannot
fire never stops the others. Time is a FakeClock; the thread's sleeps are real but short."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

import pytest

from agentvisor.clock import FakeClock
from agentvisor.server.scheduler import Scheduler
from agentvisor.store.database import Fired, Row, Store
from tests.helpers import CLOCK_T0, wait_until

T0 = CLOCK_T0


@pytest.fixture
def ids(store: Store) -> dict[str, int]:
    project = store.upsert_project("demo", "/tmp/demo")
    developer, _ = store.register_agent(project["id"], "developer")
    return {"project": project["id"], "developer": developer["id"]}


@pytest.fixture
def running() -> Iterator[list[Scheduler]]:
    """Schedulers a test started; each is stopped at the end whatever happened."""
    started: list[Scheduler] = []
    yield started
    for scheduler in started:
        scheduler.stop()


def add(
    store: Store, ids: dict[str, int], note: str, due_at: float, every_s: float | None = None
) -> Row:
    row, _ = store.add_checkin(ids["project"], "operator", ids["developer"], note, due_at, every_s)
    return row


def inbox(store: Store, ids: dict[str, int]) -> list[str]:
    return [m["body"] for m in store.pending_messages(ids["developer"])]


def asleep(scheduler: Scheduler) -> bool:
    """The thread has finished a pass and waits for a check-in that is due (it holds the
    condition until it waits; with nothing pending `_wake_at` stays None)."""
    return scheduler._wake_at is not None


def test_a_due_check_in_fires_once_and_becomes_a_checkin_message(
    store: Store, ids: dict[str, int], clock: FakeClock
):
    seen: list[list[Fired]] = []
    scheduler = Scheduler(store, on_fired=seen.append)
    checkin = add(store, ids, "look at the build", T0 + 60)

    assert scheduler.run_once() == []  # not due yet
    clock.advance(60)
    [fired] = scheduler.run_once()
    assert scheduler.run_once() == []  # fired once, not again

    assert fired.checkin_id == checkin["id"]
    message = store.get_message(fired.message["id"])
    assert (message["kind"], message["sender"], message["checkin_id"]) == (
        "checkin",
        "operator",
        checkin["id"],
    )
    assert inbox(store, ids) == ["Scheduled check-in: look at the build"]
    row = store.get_checkin(checkin["id"])
    assert (row["state"], row["fired_count"], row["last_fired_at"]) == ("fired", 1, T0 + 60)
    assert seen == [[fired]] and scheduler.fired_total == 1


def test_a_recurring_check_in_keeps_its_grid_however_late_it_fires(
    store: Store, ids: dict[str, int], clock: FakeClock
):
    scheduler = Scheduler(store)
    checkin = add(store, ids, "status", T0 + 60, every_s=60)

    clock.set(T0 + 60 + 25)  # 25 s late: the next one is still on the minute grid
    assert len(scheduler.run_once()) == 1
    assert store.get_checkin(checkin["id"])["due_at"] == T0 + 120

    clock.set(T0 + 120 + 3 * 60 + 10)  # 120 is due, 180..300 missed: one message, grid kept
    assert len(scheduler.run_once()) == 1
    row = store.get_checkin(checkin["id"])
    assert (row["state"], row["due_at"], row["fired_count"]) == ("pending", T0 + 360, 2)
    late = inbox(store, ids)[-1]
    assert "late by 3m 10s" in late and "3 earlier occurrences skipped" in late
    assert store.next_due_at() == T0 + 360


def test_run_once_fires_everything_due_in_batches(
    store: Store, ids: dict[str, int], clock: FakeClock
):
    scheduler = Scheduler(store, batch=2)
    for i in range(5):
        add(store, ids, f"n{i}", T0 - i)
    assert len(scheduler.run_once()) == 5
    assert sorted(inbox(store, ids)) == [f"Scheduled check-in: n{i}" for i in range(5)]
    assert store.count_pending_checkins() == 0


def test_a_check_in_due_before_the_current_wake_up_wakes_the_sleeping_thread(
    store: Store, ids: dict[str, int], clock: FakeClock, running: list[Scheduler]
):
    scheduler = Scheduler(store, max_sleep_s=30.0)
    add(store, ids, "far away", T0 + 1000)
    scheduler.start()
    running.append(scheduler)
    wait_until(lambda: asleep(scheduler), timeout_s=5, message="the scheduler to sleep")

    soon = add(store, ids, "now", T0)
    scheduler.wake(soon["due_at"])
    # Without the wake-up it would sleep 30 s: well past this timeout.
    wait_until(lambda: inbox(store, ids), timeout_s=5, message="the woken check-in")
    assert inbox(store, ids) == ["Scheduled check-in: now"]


def test_a_check_in_due_after_the_current_wake_up_does_not_interrupt_the_sleep(
    store: Store, ids: dict[str, int], clock: FakeClock, running: list[Scheduler]
):
    scheduler = Scheduler(store, max_sleep_s=30.0)
    add(store, ids, "first", T0 + 1000)
    scheduler.start()
    running.append(scheduler)
    wait_until(lambda: asleep(scheduler), timeout_s=5, message="the scheduler to sleep")

    later = add(store, ids, "later", T0 + 2000)
    clock.set(T0 + 2000)  # both are due, yet the thread was told of nothing sooner
    scheduler.wake(later["due_at"])
    time.sleep(0.3)
    assert inbox(store, ids) == []
    scheduler.wake()  # an unqualified wake-up always interrupts
    wait_until(lambda: len(inbox(store, ids)) == 2, timeout_s=5, message="both check-ins")


def test_a_check_in_added_without_a_wake_up_is_noticed_within_max_sleep(
    store: Store, ids: dict[str, int], clock: FakeClock, running: list[Scheduler]
):
    scheduler = Scheduler(store, max_sleep_s=0.2)
    add(store, ids, "far away", T0 + 1000)
    scheduler.start()
    running.append(scheduler)
    wait_until(lambda: asleep(scheduler), timeout_s=5, message="the scheduler to sleep")
    add(store, ids, "from another process", T0)  # as another process would: no wake()
    wait_until(lambda: inbox(store, ids), timeout_s=5, message="the unannounced check-in")


def test_stop_ends_a_sleeping_thread_at_once(store: Store, ids: dict[str, int]):
    scheduler = Scheduler(store, max_sleep_s=30.0)
    add(store, ids, "far away", T0 + 1000)
    scheduler.start()
    wait_until(lambda: asleep(scheduler), timeout_s=5, message="the scheduler to sleep")
    started = time.monotonic()
    scheduler.stop()
    assert time.monotonic() - started < 2.0
    assert scheduler._thread is not None and not scheduler._thread.is_alive()


def test_a_failing_on_fired_callback_does_not_stop_the_thread(
    store: Store, ids: dict[str, int], clock: FakeClock, running: list[Scheduler]
):
    calls: list[int] = []

    def explode(fired: list[Fired]) -> None:
        calls.append(len(fired))
        if len(calls) == 1:
            raise RuntimeError("subscriber broke")

    scheduler = Scheduler(store, on_fired=explode, max_sleep_s=30.0)
    add(store, ids, "one", T0)
    scheduler.start()
    running.append(scheduler)
    wait_until(lambda: calls, timeout_s=5, message="the first firing")
    add(store, ids, "two", T0)
    scheduler.wake(T0)
    wait_until(lambda: len(calls) == 2, timeout_s=5, message="the second firing")
    assert inbox(store, ids) == ["Scheduled check-in: one", "Scheduled check-in: two"]


def plant(store: Store, ids: dict[str, int], note: str, **change: object) -> int:
    """A check-in row as an older or buggy writer could leave it, written straight to the file."""
    row = {
        "project_id": ids["project"],
        "creator": "operator",
        "recipient_id": ids["developer"],
        "note": note,
        "due_at": T0 - 10,
        "every_s": None,
        "state": "pending",
        "fired_count": 0,
        "created_at": T0,
        **change,
    }
    conn = sqlite3.connect(store.path, isolation_level=None)
    try:
        sql = f"INSERT INTO checkins ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"
        return int(conn.execute(sql, tuple(row.values())).lastrowid or 0)
    finally:
        conn.close()


def test_check_ins_that_cannot_fire_are_set_aside_and_the_others_fire(
    store: Store, ids: dict[str, int], clock: FakeClock
):
    good_before = add(store, ids, "before", T0 - 20)
    bad = [
        plant(store, ids, "text due", due_at="soon"),
        plant(store, ids, "tiny repeat", every_s=0.001),
        plant(store, ids, "negative repeat", every_s=-60.0),
        plant(store, ids, "recipient gone", recipient_id=999_999),
    ]
    good_after = add(store, ids, "after", T0)

    fired = Scheduler(store).run_once()

    assert {f.checkin_id for f in fired} == {good_before["id"], good_after["id"]}
    assert sorted(inbox(store, ids)) == ["Scheduled check-in: after", "Scheduled check-in: before"]
    assert {store.get_checkin(i)["state"] for i in bad} == {"failed"}
    events = store.list_events(kind="checkin.failed")
    assert {e["data"]["checkin_id"] for e in events} == set(bad)
    assert all(e["data"]["reason"] for e in events)
    assert store.next_due_at() is None  # nothing left that would keep the thread spinning


def test_the_thread_keeps_firing_past_a_row_that_cannot_fire(
    store: Store, ids: dict[str, int], clock: FakeClock, running: list[Scheduler]
):
    bad = plant(store, ids, "text due", due_at="soon")
    scheduler = Scheduler(store, max_sleep_s=30.0)
    scheduler.start()
    running.append(scheduler)
    wait_until(lambda: store.get_checkin(bad)["state"] == "failed", timeout_s=5, message="aside")
    add(store, ids, "still fires", T0)
    scheduler.wake(T0)
    wait_until(lambda: inbox(store, ids), timeout_s=5, message="the good check-in")
    assert scheduler._thread is not None and scheduler._thread.is_alive()
