"""The project queue's rows over a real SQLite file: add, claim in order with a deadline,
update, finish, list by state, cancel (final, even against the runner's late writes), and
attempts across retries."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agentvisor.clock import FakeClock
from agentvisor.config import Settings
from agentvisor.errors import Conflict, NotFound
from agentvisor.server.project_queue import QueueRunner
from agentvisor.store.database import Row, Store
from agentvisor.store.queue_store import QueueStore
from tests.helpers import CLOCK_T0

T0 = CLOCK_T0


@pytest.fixture
def queue(store: Store) -> QueueStore:
    return QueueStore(store)


def add(queue: QueueStore, name: str, max_attempts: int = 2) -> Row:
    return queue.add(f"/specs/{name}.md", None, {"roles": ["developer"]}, max_attempts)


def kinds(store: Store) -> list[str]:
    return [e["kind"] for e in reversed(store.list_events(limit=1000)) if e["kind"][:6] == "queue."]


def test_an_added_entry_is_queued_with_its_options_and_no_attempts(
    queue: QueueStore, store: Store
) -> None:
    row = queue.add("/specs/a.md", "/work/a", {"roles": ["developer"], "budget": 3}, 3)
    assert row["state"] == "queued"
    assert (row["attempts"], row["max_attempts"]) == (0, 3)
    assert row["options"] == {"roles": ["developer"], "budget": 3}  # read back as a dict
    assert (row["spec_path"], row["current_spec"], row["project_dir"]) == (
        "/specs/a.md",
        "/specs/a.md",
        "/work/a",
    )
    assert row["created_at"] == T0
    assert row["started_at"] is None and row["deadline_at"] is None
    assert queue.get(row["id"]) == row
    [event] = store.list_events(kind="queue.added")
    assert event["data"] == {"queue_id": row["id"], "spec": "/specs/a.md"}


def test_get_of_an_unknown_entry_is_not_found(queue: QueueStore) -> None:
    with pytest.raises(NotFound, match="no queue entry with id 42"):
        queue.get(42)


def test_claim_next_takes_the_oldest_queued_entry_first(queue: QueueStore) -> None:
    first, second, third = add(queue, "a"), add(queue, "b"), add(queue, "c")
    claimed = [queue.claim_next(60), queue.claim_next(60), queue.claim_next(60)]
    assert [c["id"] for c in claimed if c] == [first["id"], second["id"], third["id"]]
    assert queue.claim_next(60) is None  # running entries are never claimed again


def test_claim_next_on_an_empty_queue_returns_none_and_logs_nothing(
    queue: QueueStore, store: Store
) -> None:
    assert queue.claim_next(60) is None
    assert kinds(store) == []


def test_a_claimed_entry_runs_with_a_deadline_from_now(
    queue: QueueStore, store: Store, clock: FakeClock
) -> None:
    row = add(queue, "a")
    clock.advance(100)
    claimed = queue.claim_next(timeout_s=1800)
    assert claimed is not None and claimed["id"] == row["id"]
    assert claimed["state"] == "running" and claimed["attempts"] == 1
    assert (claimed["started_at"], claimed["deadline_at"]) == (T0 + 100, T0 + 100 + 1800)
    assert claimed["finished_at"] is None
    assert kinds(store) == ["queue.added", "queue.started"]


def test_update_changes_only_the_fields_given(queue: QueueStore) -> None:
    row = add(queue, "a")
    updated = queue.update(row["id"], project="a-1", project_dir="/work/a-1")
    assert (updated["project"], updated["project_dir"]) == ("a-1", "/work/a-1")
    assert {k: v for k, v in updated.items() if k not in ("project", "project_dir")} == {
        k: v for k, v in row.items() if k not in ("project", "project_dir")
    }


def test_finish_records_the_state_the_error_and_when(
    queue: QueueStore, store: Store, clock: FakeClock
) -> None:
    row = add(queue, "a")
    queue.claim_next(60)
    clock.advance(30)
    failed = queue.finish(row["id"], "failed", "the orchestrator never reported")
    assert (failed["state"], failed["last_error"], failed["finished_at"]) == (
        "failed",
        "the orchestrator never reported",
        T0 + 30,
    )
    [event] = store.list_events(kind="queue.failed")
    assert event["data"] == {"queue_id": row["id"], "error": "the orchestrator never reported"}
    assert queue.claim_next(60) is None  # a finished entry is not claimed


def test_list_is_in_order_and_filters_by_state(queue: QueueStore) -> None:
    a, b, c, d = add(queue, "a"), add(queue, "b"), add(queue, "c"), add(queue, "d")
    queue.claim_next(60)  # a runs
    queue.claim_next(60)  # b runs ...
    queue.finish(b["id"], "done")  # ... and is done
    queue.cancel(d["id"])

    def ids(state: str | None) -> list[int]:
        return [r["id"] for r in queue.list(state)]

    assert ids(None) == [a["id"], b["id"], c["id"], d["id"]]
    assert ids("queued") == [c["id"]]
    assert ids("running") == [a["id"]]
    assert ids("done") == [b["id"]]
    assert ids("cancelled") == [d["id"]]
    assert ids("failed") == []
    assert [r["id"] for r in queue.list(limit=2)] == [a["id"], b["id"]]
    assert all(isinstance(r["options"], dict) for r in queue.list())


def test_cancel_takes_a_queued_or_running_entry_out_of_the_queue(queue: QueueStore) -> None:
    running, waiting = add(queue, "a"), add(queue, "b")
    queue.claim_next(60)  # claims "a"; "b" still waits
    cancelled = queue.cancel(waiting["id"])
    assert cancelled["state"] == "cancelled" and cancelled["finished_at"] == T0
    assert queue.cancel(running["id"])["state"] == "cancelled"
    assert queue.claim_next(60) is None
    assert queue.list("running") == [] and queue.list("queued") == []


@pytest.mark.parametrize("state", ["done", "failed", "cancelled"])
def test_cancel_of_a_finished_entry_is_a_conflict(queue: QueueStore, state: str) -> None:
    row = add(queue, "a")
    queue.finish(row["id"], state)
    with pytest.raises(Conflict, match=f"already {state}"):
        queue.cancel(row["id"])
    assert queue.get(row["id"])["state"] == state


def test_a_cancel_is_final_even_when_the_runner_finishes_the_entry_late(
    queue: QueueStore,
) -> None:
    row = add(queue, "a")
    queue.claim_next(60)
    queue.cancel(row["id"])  # the operator, while the runner checks the entry it listed
    queue.finish(row["id"], "done")  # the runner, from its earlier read
    assert queue.get(row["id"])["state"] == "cancelled"


def test_a_cancel_is_final_even_when_the_runner_requeues_the_entry_late(
    queue: QueueStore,
) -> None:
    row = add(queue, "a", max_attempts=2)
    queue.claim_next(60)
    queue.cancel(row["id"])
    requeued = queue.update(row["id"], state="queued", current_spec="/specs/a-retry-1.md")
    assert requeued["state"] == "cancelled"
    assert queue.claim_next(60) is None
    assert queue.update(row["id"], escalated_at=T0)["escalated_at"] == T0  # other fields land


def test_cancel_of_an_unknown_entry_is_not_found(queue: QueueStore) -> None:
    with pytest.raises(NotFound):
        queue.cancel(7)


def test_a_retried_entry_counts_its_attempts_and_gets_a_fresh_deadline(
    queue: QueueStore, clock: FakeClock
) -> None:
    row = add(queue, "a", max_attempts=2)
    first = queue.claim_next(60)
    assert first is not None and first["attempts"] == 1
    clock.advance(90)  # the first attempt ran out of time: requeued with a retry spec
    queue.finish(row["id"], "failed", "timed out")
    queue.update(row["id"], state="queued", current_spec="/specs/a-retry-1.md")
    second = queue.claim_next(60)
    assert second is not None and second["id"] == row["id"]
    assert (second["attempts"], second["max_attempts"]) == (2, 2)
    assert (second["started_at"], second["deadline_at"]) == (T0 + 90, T0 + 150)
    assert second["finished_at"] is None  # cleared by the new claim
    assert (second["spec_path"], second["current_spec"]) == ("/specs/a.md", "/specs/a-retry-1.md")


def test_a_requeued_entry_is_claimed_before_younger_queued_ones(queue: QueueStore) -> None:
    first, second = add(queue, "a"), add(queue, "b")
    queue.claim_next(60)
    queue.update(first["id"], state="queued")  # a failed and was requeued
    claimed = queue.claim_next(60)
    assert claimed is not None and claimed["id"] == first["id"]  # by id: its retry comes first
    assert queue.claim_next(60) == queue.get(second["id"])


def test_two_stores_on_one_file_never_claim_the_same_entry(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "shared.db"
    stores = [Store(path, clock) for _ in range(4)]
    for i in range(3):
        QueueStore(stores[0]).add(f"/specs/{i}.md", None, {}, 1)
    claims: list[int] = []
    lock, start = threading.Lock(), threading.Barrier(len(stores))

    def claim(store: Store) -> None:
        start.wait()
        while (row := QueueStore(store).claim_next(60)) is not None:
            with lock:
                claims.append(int(row["id"]))

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(claims) == [1, 2, 3]  # each claimed once, by one of them
    assert {r["attempts"] for r in QueueStore(stores[0]).list()} == {1}
    for store in stores:
        store.close()


@pytest.mark.parametrize("max_attempts", [1, 2], ids=["last attempt", "one retry left"])
def test_the_runner_neither_retries_nor_escalates_an_entry_cancelled_after_it_read_it(
    tmp_path: Path, store: Store, queue: QueueStore, max_attempts: int
) -> None:
    escalated = tmp_path / "escalated"
    settings = Settings(state_dir=tmp_path / "state", escalation_command=f"touch {escalated}")
    runner = QueueRunner(settings, store)
    spec = tmp_path / "a.md"
    spec.write_text("# a\n", encoding="utf-8")
    queue.add(str(spec), None, {}, max_attempts)
    stale = queue.claim_next(60)  # what the runner's pass read
    assert stale is not None
    queue.cancel(stale["id"])  # the operator, meanwhile
    runner._fail(stale, "the project did not complete within 1m")  # the pass goes on
    assert queue.get(stale["id"])["state"] == "cancelled"
    assert kinds(store)[-1] == "queue.cancelled"  # no failed, retry or escalated after it
    assert not escalated.exists()
    assert queue.claim_next(60) is None
