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
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

# A batch commits when nobody waits for the writer, or at these bounds under a steady stream.
MAX_BATCH_MEMBERS = 128
MAX_BATCH_AGE_S = 0.05


class _Batch:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.members = 0
        self.done = threading.Event()
        self.error: Exception | None = None


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
        with self._count:
            self._waiting += 1
        self._writer.acquire()
        with self._count:
            self._waiting -= 1
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

    def close(self) -> None:
        """Close the writer connection (a later transaction opens it again)."""
        with self._writer:
            if self._batch is not None:
                self._commit(self._batch)
            if self._conn is not None:
                self._conn.close()
                self._conn = None

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
            waiting == 0
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
            batch.done.set()

    def _fail(self, error: Exception) -> None:
        batch, self._batch = self._batch, None
        if batch is not None:
            batch.error = error
            batch.done.set()
