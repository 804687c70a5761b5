"""Group commit on a real SQLite file: writes of many threads share a COMMIT, each returns only
once its COMMIT is done, a failing body leaves the rest of its batch alone, and a failing COMMIT
fails every member."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from agentvisor.errors import StorageFull
from agentvisor.store.database import Store, _storage_errors
from agentvisor.store.group_commit import GroupCommit
from tests.helpers import wait_until


class _Connection(sqlite3.Connection):
    """Counts COMMITs; fails them while `fail_commit` is set (as a full disk does)."""

    commits = 0
    fail_commit = False

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:  # type: ignore[override]
        if sql == "COMMIT":
            type(self).commits += 1
            if type(self).fail_commit:
                raise sqlite3.OperationalError("database or disk is full")
        return super().execute(sql, *args)


def _group(path: Path) -> tuple[GroupCommit, type[_Connection]]:
    counted = type("Counted", (_Connection,), {"commits": 0, "fail_commit": False})

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, factory=counted
        )
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (n INTEGER)")
    return GroupCommit(connect, _storage_errors), counted


def _rows(path: Path) -> list[int]:
    with sqlite3.connect(path) as reader:  # a connection of its own: what is committed
        return sorted(n for (n,) in reader.execute("SELECT n FROM t"))


def _batch_of_three(
    group: GroupCommit, second: Callable[[sqlite3.Connection], None]
) -> dict[str, object]:
    """Three writers in one batch: the first holds its transaction open until the other two
    wait for the writer; each thread's outcome by name (None, or what it raised)."""
    inside, go = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def holds(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (1)")
        inside.set()
        go.wait(5)

    def run(name: str, body: Callable[[sqlite3.Connection], None]) -> None:
        try:
            with group.transaction() as conn:
                body(conn)
            outcome[name] = None
        except Exception as exc:
            outcome[name] = exc

    threads = [threading.Thread(target=run, args=("first", holds))]
    threads[0].start()
    inside.wait(5)
    for name, body in (
        ("second", second),
        ("third", lambda c: c.execute("INSERT INTO t VALUES (3)")),
    ):
        threads.append(threading.Thread(target=run, args=(name, body)))
        threads[-1].start()
    wait_until(lambda: group._waiting == 2, timeout_s=5, message="two writers waiting")
    go.set()
    for thread in threads:
        thread.join(10)
    return outcome


def test_writers_that_queue_share_one_commit_and_every_row_is_there(tmp_path: Path):
    group, counted = _group(tmp_path / "db")
    outcome = _batch_of_three(group, lambda c: c.execute("INSERT INTO t VALUES (2)"))
    assert outcome == {"first": None, "second": None, "third": None}
    assert _rows(tmp_path / "db") == [1, 2, 3]
    assert counted.commits == 1


def test_a_body_that_raises_takes_back_only_its_own_writes(tmp_path: Path):
    group, counted = _group(tmp_path / "db")

    def fails(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (2)")
        raise ValueError("refused")

    outcome = _batch_of_three(group, fails)
    assert outcome["first"] is None and outcome["third"] is None
    assert isinstance(outcome["second"], ValueError)
    assert _rows(tmp_path / "db") == [1, 3]
    assert counted.commits == 1


def test_a_failed_commit_fails_every_member_and_keeps_nothing(tmp_path: Path):
    group, counted = _group(tmp_path / "db")
    counted.fail_commit = True
    outcome = _batch_of_three(group, lambda c: c.execute("INSERT INTO t VALUES (2)"))
    assert all(isinstance(outcome[name], StorageFull) for name in ("first", "second", "third"))
    assert _rows(tmp_path / "db") == []
    counted.fail_commit = False
    with group.transaction() as conn:  # the writer goes on once the disk has room
        conn.execute("INSERT INTO t VALUES (4)")
    assert _rows(tmp_path / "db") == [4]


def test_a_transaction_is_durable_when_its_block_returns(tmp_path: Path):
    group, _ = _group(tmp_path / "db")
    seen: list[list[int]] = []

    def write(n: int) -> None:
        with group.transaction() as conn:
            conn.execute("INSERT INTO t VALUES (?)", (n,))
        seen.append([m for m in _rows(tmp_path / "db") if m == n])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(seen) == [[n] for n in range(20)]


def test_a_nested_transaction_is_a_savepoint_of_the_outer_one(tmp_path: Path):
    group, counted = _group(tmp_path / "db")
    with group.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(ValueError), group.transaction() as inner:
            inner.execute("INSERT INTO t VALUES (2)")
            raise ValueError("inner only")
        with group.transaction() as inner:
            inner.execute("INSERT INTO t VALUES (3)")
    assert _rows(tmp_path / "db") == [1, 3]
    assert counted.commits == 1


def test_the_store_reads_its_own_writes_inside_a_transaction_and_others_see_them_after(
    tmp_path: Path,
):
    store = Store(tmp_path / "state.db")
    project = store.upsert_project("p", str(tmp_path))
    agent, _ = store.register_agent(project["id"], "developer")
    other = Store(tmp_path / "state.db")  # another writer and reader of the same file
    with store.transaction():
        message, created = store.add_message(project["id"], "operator", agent["id"], "hi")
        assert created and store.get_message(message["id"])["body"] == "hi"
        # not committed yet:
        assert other.fetch_one("SELECT id FROM messages WHERE id = ?", (message["id"],)) is None
    assert other.get_message(message["id"])["body"] == "hi"
    other.close()
    store.close()


# -- jobs for the writer thread (the event loop's writes) -----------------------------------
def _insert(group: GroupCommit, n: int) -> Callable[[], int]:
    def body() -> int:
        group.connection.execute("INSERT INTO t VALUES (?)", (n,))
        return n

    return body


def test_submitted_jobs_share_commits_and_each_settles_once_durable(tmp_path: Path):
    group, counted = _group(tmp_path / "db")
    seen: dict[int, list[int]] = {}

    def check(n: int) -> Callable[[object], None]:
        def done(future: object) -> None:  # runs as the future settles: it must be there
            seen[n] = [m for m in _rows(tmp_path / "db") if m == n]

        return done

    # The first job holds the writer until the other 49 are queued: one batch takes them.
    inside, go = threading.Event(), threading.Event()

    def holds() -> int:
        group.connection.execute("INSERT INTO t VALUES (100)")
        inside.set()
        go.wait(5)
        return 100

    first = group.submit(holds)
    inside.wait(5)
    futures = [group.submit(_insert(group, n)) for n in range(49)]
    for n, future in enumerate(futures):
        future.add_done_callback(check(n))
    go.set()
    assert [future.result(10) for future in futures] == list(range(49))
    assert first.result(10) == 100
    wait_until(lambda: len(seen) == 49, timeout_s=5, message="every callback")
    assert seen == {n: [n] for n in range(49)}
    assert counted.commits <= 2  # the holder's batch, and the 49 queued behind it
    group.close()


def test_a_submitted_body_that_raises_fails_alone(tmp_path: Path):
    group, _ = _group(tmp_path / "db")

    def fails() -> None:
        group.connection.execute("INSERT INTO t VALUES (2)")
        raise ValueError("refused")

    futures = [
        group.submit(_insert(group, 1)),
        group.submit(fails),
        group.submit(_insert(group, 3)),
    ]
    assert futures[0].result(10) == 1 and futures[2].result(10) == 3
    with pytest.raises(ValueError, match="refused"):
        futures[1].result(10)
    assert _rows(tmp_path / "db") == [1, 3]
    group.close()


def test_a_failed_commit_fails_every_submitted_job(tmp_path: Path):
    group, counted = _group(tmp_path / "db")
    counted.fail_commit = True
    future = group.submit(_insert(group, 1))
    with pytest.raises(StorageFull):
        future.result(10)
    assert _rows(tmp_path / "db") == []
    counted.fail_commit = False
    assert group.submit(_insert(group, 2)).result(10) == 2
    assert _rows(tmp_path / "db") == [2]
    group.close()


def test_after_commit_runs_once_the_write_is_durable(tmp_path: Path):
    group, _ = _group(tmp_path / "db")
    seen: list[list[int]] = []

    def body() -> None:
        group.connection.execute("INSERT INTO t VALUES (7)")
        group.after_commit(lambda: seen.append(_rows(tmp_path / "db")))
        assert seen == []  # not before the commit

    group.submit(body).result(10)
    with group.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (8)")
        group.after_commit(lambda: seen.append(_rows(tmp_path / "db")))
        assert len(seen) == 1
    group.after_commit(lambda: seen.append([0]))  # outside a transaction: at once
    assert seen == [[7], [7, 8], [0]]
    group.close()


def test_close_finishes_the_queued_jobs(tmp_path: Path):
    group, _ = _group(tmp_path / "db")
    futures = [group.submit(_insert(group, n)) for n in range(10)]
    group.close()
    assert [future.result(0) for future in futures] == list(range(10))
    assert _rows(tmp_path / "db") == list(range(10))
