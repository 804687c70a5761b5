"""The project queue's rows: specs waiting to run, running, done or failed. Part of the store."""

from __future__ import annotations

import json
from typing import Any

from agentvisor.errors import Conflict, NotFound
from agentvisor.store.database import Row, Store, insert_row

QUEUE_STATES = ("queued", "running", "done", "failed", "cancelled")


class QueueStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def add(
        self, spec_path: str, project_dir: str | None, options: dict[str, Any], max_attempts: int
    ) -> Row:
        now = self.store.clock.now()
        with self.store.transaction() as db:
            pk = insert_row(
                db,
                "queue",
                {
                    "spec_path": spec_path,
                    "project_dir": project_dir,
                    "options": json.dumps(options),
                    "state": "queued",
                    "attempts": 0,
                    "max_attempts": max_attempts,
                    "current_spec": spec_path,
                    "created_at": now,
                },
            )
            self.store.log_event("queue.added", data={"queue_id": pk, "spec": spec_path}, db=db)
        return self.get(pk)

    def get(self, queue_id: int) -> Row:
        row = self.store.fetch_one("SELECT * FROM queue WHERE id = ?", (queue_id,))
        if row is None:
            raise NotFound(f"no queue entry with id {queue_id}")
        row["options"] = json.loads(row["options"] or "{}")
        return row

    def list(self, state: str | None = None, limit: int = 200) -> list[Row]:
        if state:
            rows = self.store.fetch_all(
                "SELECT id FROM queue WHERE state = ? ORDER BY id LIMIT ?", (state, limit)
            )
        else:
            rows = self.store.fetch_all("SELECT id FROM queue ORDER BY id LIMIT ?", (limit,))
        return [self.get(r["id"]) for r in rows]

    def claim_next(self, timeout_s: float) -> Row | None:
        """Mark the oldest queued entry running (one process wins it) and return it."""
        now = self.store.clock.now()
        with self.store.transaction() as db:
            row = self.store.fetch_one(
                "SELECT id FROM queue WHERE state = 'queued' ORDER BY id LIMIT 1"
            )
            if row is None:
                return None
            db.execute(
                "UPDATE queue SET state = 'running', attempts = attempts + 1, "
                "started_at = ?, deadline_at = ?, finished_at = NULL WHERE id = ?",
                (now, now + timeout_s, row["id"]),
            )
            self.store.log_event("queue.started", data={"queue_id": row["id"]}, db=db)
        return self.get(row["id"])

    def update(self, queue_id: int, **fields: Any) -> Row:
        """Set `fields`; a change of state leaves a cancelled entry cancelled (the runner
        requeues from a read made before the operator's cancel)."""
        if not fields:
            return self.get(queue_id)
        assignments = ", ".join(f"[{name}] = ?" for name in fields)
        final = " AND state != 'cancelled'" if "state" in fields else ""
        with self.store.transaction() as db:
            db.execute(
                f"UPDATE queue SET {assignments} WHERE id = ?{final}",
                (*fields.values(), queue_id),
            )
        return self.get(queue_id)

    def finish(self, queue_id: int, state: str, error: str | None = None) -> Row:
        """End the entry as `state`; a cancelled entry stays cancelled (a cancel is final)."""
        with self.store.transaction() as db:
            changed = db.execute(
                "UPDATE queue SET state = ?, last_error = ?, finished_at = ? "
                "WHERE id = ? AND state != 'cancelled'",
                (state, error, self.store.clock.now(), queue_id),
            ).rowcount
            if changed:
                self.store.log_event(
                    f"queue.{state}", data={"queue_id": queue_id, "error": error}, db=db
                )
        return self.get(queue_id)

    def cancel(self, queue_id: int) -> Row:
        """Cancel a queued or running entry: read and write in one transaction, so a finish
        racing it either lands first (Conflict) or is refused after it."""
        with self.store.transaction() as db:
            changed = db.execute(
                "UPDATE queue SET state = 'cancelled', last_error = NULL, finished_at = ? "
                "WHERE id = ? AND state IN ('queued', 'running')",
                (self.store.clock.now(), queue_id),
            ).rowcount
            if changed:
                self.store.log_event(
                    "queue.cancelled", data={"queue_id": queue_id, "error": None}, db=db
                )
        row = self.get(queue_id)  # NotFound for an unknown id
        if not changed:
            raise Conflict(f"queue entry {queue_id} is already {row['state']}")
        return row
