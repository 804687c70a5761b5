"""Group commit: the write transactions of many threads share one COMMIT, so one fsync.

Every thread's transaction runs on one writer connection, inside its own SAVEPOINT of a shared
"batch" transaction, one thread at a time. The thread that finds nobody else waiting for the
writer commits the batch; the other members wait for that COMMIT and only then return, so
nothing is answered before it is durable (`synchronous=FULL` stays). A body that raises rolls
back to its own savepoint and leaves the rest of the batch alone; a COMMIT that fails (a full
disk) fails every member, and none of them was answered yet.

With one writer thread this is the plain BEGIN IMMEDIATE ... COMMIT of before: the batch has
one member and commits at once. Under a burst of writes (30 shims acking, 8 clients sending)
the members queue on the writer lock while a COMMIT runs, and the next batch takes them all.

The API's hot routes do not block a worker thread each: `submit(fn)` queues `fn` for the
writer thread, which runs every queued job as a member of one batch, in its own SAVEPOINT, and
resolves each job's future only once that batch has committed. The event loop awaits the
future, so a burst of requests costs one thread hop and one fsync per batch, not per request.
Work that must wait for the data to be durable (waking a long poll that reads it) is handed to
`after_commit`.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

# A batch commits when nobody waits for the writer, or at these bounds under a steady stream.
MAX_BATCH_MEMBERS = 128
MAX_BATCH_AGE_S = 0.05


class _Batch:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.members = 0
        self.done = threading.Event()
        self.error: Exception | None = None
        self.callbacks: list[Callable[[], None]] = []  # run once the batch has ended

    def end(self) -> None:
        """The batch committed or failed: wake its members and run its callbacks."""
        self.done.set()
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


_STOP = object()  # the writer thread's sentinel


class BatchFailed(Exception):
    """The batch a transaction belonged to was rolled back after the transaction's body ran."""


class GroupCommit:
    """The writer side of one database: `transaction()` for every thread of this process."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        storage_error: Callable[[sqlite3.OperationalError], Exception],
    ) -> None:
        self._connect = connect
        self._storage_error = storage_error
        self._writer = threading.Lock()  # the connection and the batch, one thread at a time
        self._count = threading.Lock()  # guards _waiting
        self._waiting = 0  # threads on their way to the writer lock
        self._conn: sqlite3.Connection | None = None
        self._batch: _Batch | None = None
        self._local = threading.local()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()  # for the writer thread
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    @property
    def in_transaction(self) -> bool:
        """Whether the calling thread is inside one of its transactions."""
        return bool(getattr(self._local, "depth", 0))

    @property
    def connection(self) -> sqlite3.Connection:
        """The writer connection; only for the thread inside a transaction."""
        if not self.in_transaction or self._conn is None:
            raise RuntimeError("the writer connection is only for a thread in a transaction")
        return self._conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, durable when the block exits without an exception."""
        if self.in_transaction:  # nested: a savepoint inside the caller's own
            with self._savepoint(f"nested{self._local.depth}") as conn:
                yield conn
            return
        self._acquire_writer()
        try:
            batch = self._join()
            with self._savepoint("member") as conn:
                yield conn
        finally:
            # Also when this thread failed before joining: an open batch always finds the
            # thread that commits it.
            if self._batch is not None and self._batch_is_due(self._batch):
                self._commit(self._batch)
            self._writer.release()
        batch.done.wait()
        if batch.error is not None:
            # A fresh exception in each member's thread, not one object raised in many.
            raise type(batch.error)(*batch.error.args)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the calling thread's transaction has ended (committed, or
        failed), in whichever thread ends its batch; at once outside a transaction."""
        if self.in_transaction and self._batch is not None:
            self._batch.callbacks.append(callback)
        else:
            callback()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` in a write transaction on the writer thread. The future holds its result
        (or its exception) once the transaction's batch has committed: never before it is
        durable. A body that raises rolls back only its own work."""
        future: Future[T] = Future()
        self._jobs.put((fn, future))
        if self._thread is None:
            with self._thread_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._serve, name="agentvisor-writer", daemon=True
                    )
                    self._thread.start()
        return future

    def close(self) -> None:
        """Finish the queued jobs, stop the writer thread and close the writer connection
        (a later transaction opens it again)."""
        with self._thread_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(_STOP)
            thread.join()
        with self._writer:
            if self._batch is not None:
                self._commit(self._batch)
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _acquire_writer(self) -> None:
        """Take the writer lock, counted as waiting meanwhile: the holder commits its batch
        only when nobody waits."""
        with self._count:
            self._waiting += 1
        self._writer.acquire()
        with self._count:
            self._waiting -= 1

    # -- the writer thread -------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            first = self._jobs.get()
            if first is _STOP:
                return
            jobs = [first]
            while len(jobs) < MAX_BATCH_MEMBERS:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    self._jobs.put(_STOP)  # after this round
                    break
                jobs.append(job)
            self._run(jobs)

    def _run(self, jobs: list[tuple[Callable[[], Any], Future[Any]]]) -> None:
        self._acquire_writer()
        try:
            for fn, future in jobs:
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    batch = self._join()
                    with self._savepoint("member"):
                        value = fn()
                except BaseException as exc:  # its own work is undone; the batch goes on
                    future.set_exception(exc)
                    continue
                batch.callbacks.append(_resolver(batch, future, value))
        finally:
            if self._batch is not None and self._batch_is_due(self._batch):
                self._commit(self._batch)
            self._writer.release()

    # -- inside the writer lock -------------------------------------------------------------
    def _join(self) -> _Batch:
        if self._conn is None:
            self._conn = self._connect()
        if self._batch is None:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._storage_error(exc) from exc
            self._batch = _Batch()
        self._batch.members += 1
        return self._batch

    @contextlib.contextmanager
    def _savepoint(self, name: str) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        assert conn is not None
        conn.execute(f"SAVEPOINT {name}")
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            yield conn
        except BaseException:
            self._undo(conn, name)
            raise
        else:
            conn.execute(f"RELEASE {name}")
        finally:
            self._local.depth = depth

    def _undo(self, conn: sqlite3.Connection, name: str) -> None:
        """Roll one body back to its savepoint; if SQLite already rolled the whole transaction
        back (a full disk, an I/O error), the batch failed for every member."""
        if conn.in_transaction:
            try:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
                return
            except sqlite3.OperationalError as exc:
                with contextlib.suppress(sqlite3.OperationalError):
                    conn.execute("ROLLBACK")
                self._fail(self._storage_error(exc))
                return
        self._fail(BatchFailed("the write transaction was rolled back by SQLite; retry"))

    def _batch_is_due(self, batch: _Batch) -> bool:
        with self._count:
            waiting = self._waiting
        return (
            (waiting == 0 and self._jobs.empty())
            or batch.members >= MAX_BATCH_MEMBERS
            or time.monotonic() - batch.started >= MAX_BATCH_AGE_S
        )

    def _commit(self, batch: _Batch) -> None:
        assert self._conn is not None
        self._batch = None
        try:
            self._conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            with contextlib.suppress(sqlite3.OperationalError):
                self._conn.execute("ROLLBACK")
            batch.error = self._storage_error(exc)
        finally:
            batch.end()

    def _fail(self, error: Exception) -> None:
        batch, self._batch = self._batch, None
        if batch is not None:
            batch.error = error
            batch.end()


def _resolver(batch: _Batch, future: Future[Any], value: Any) -> Callable[[], None]:
    """Settle a submitted job's future once its batch has ended."""

    def resolve() -> None:
        if batch.error is not None:
            future.set_exception(type(batch.error)(*batch.error.args))
        else:
            future.set_result(value)

    return resolve
