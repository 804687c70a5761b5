"""The durable store: projects, agents, check-ins, messages and the event log in one SQLite file.

Every write that must be atomic runs in `BEGIN IMMEDIATE`, so two processes on the same file
serialise on SQLite's write lock and never act on the same row twice. Connections are per thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import secrets
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from agentvisor.clock import Clock, SystemClock
from agentvisor.core.delivery import PENDING_STATES, Event, MessageState, new_marker, transition
from agentvisor.core.recurrence import checkin_text, plan_firing, unfireable
from agentvisor.core.team import AGENTVISOR, OPERATOR
from agentvisor.errors import Conflict, InvalidInput, NotFound, StorageFull
from agentvisor.store.group_commit import GroupCommit
from agentvisor.store.migrations import migrate

T = TypeVar("T")

Row = dict[str, Any]
log = logging.getLogger("agentvisor.scheduler")
NOTICE_WAIT_S = 30.0  # the longest a due notice of agentvisor's holds back the messages after it

__all__ = ["AGENTVISOR", "OPERATOR", "Fired", "Row", "Store", "hash_token", "new_token"]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class Fired:
    checkin_id: int
    message: Row


def _text(data: bytes) -> str:
    """TEXT as read from the file: bytes that are not UTF-8 (a row an older or buggy writer
    left) read with U+FFFD in their place instead of failing every query that meets them."""
    return data.decode("utf-8", "replace")


def _storage_errors(exc: sqlite3.OperationalError) -> Exception:
    text = str(exc)
    if "disk is full" in text or "database or disk is full" in text:
        return StorageFull(
            "the disk holding the agentvisor state is full; free space and retry "
            "(nothing already accepted was lost)"
        )
    return exc


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def insert_row(db: sqlite_utils.Database, table: str, row: dict[str, Any]) -> int:
    """Insert `row` into `table`; the new row's id. A plain INSERT: sqlite-utils' `insert`
    reads the schema on every call, the biggest cost of a write on the API's hot path.
    Dicts and lists are stored as JSON, as sqlite-utils stores them."""
    names = [table, *row]
    if not all(_IDENTIFIER.fullmatch(name) for name in names):
        raise ValueError(f"not a table or column name in {names!r}")
    values = [json.dumps(v) if isinstance(v, dict | list | tuple) else v for v in row.values()]
    sql = f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"
    pk = db.execute(sql, values).lastrowid
    if not isinstance(pk, int):
        raise TypeError(f"{table} gave no integer id for a new row: {pk!r}")
    return pk


def match(
    equal: dict[str, Any], extra: tuple[str, list[Any]] | None = None
) -> tuple[str | None, list[Any]]:
    """A WHERE clause and its parameters for `rows_where`: every column of `equal` whose value
    is not None equals it, and `extra` (a clause of its own) holds; None when nothing is asked."""
    clauses = [f"{column} = ?" for column, value in equal.items() if value is not None]
    params = [value for value in equal.values() if value is not None]
    if extra is not None:
        clauses.append(extra[0])
        params += extra[1]
    return (" AND ".join(clauses) or None), params


class Store:
    """One SQLite database. Safe to share between threads (each gets its own connection)."""

    def __init__(
        self, path: Path | str, clock: Clock | None = None, synchronous: str = "FULL"
    ) -> None:
        self.path = Path(path)
        self.clock = clock or SystemClock()
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise InvalidInput(f"sqlite_synchronous={synchronous!r}: use NORMAL, FULL or EXTRA")
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Every write of this process goes through one writer connection, its transactions
        # committed in groups (group_commit.py): one fsync for a burst of API writes.
        self._group = GroupCommit(self._connect, _storage_errors)
        self._writer_db: sqlite_utils.Database | None = None
        with self.transaction() as db:
            migrate(db)

    # -- connections and transactions ------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.text_factory = _text
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection; inside a transaction, the writer connection it holds."""
        if self._group.in_transaction:
            conn = self._group.connection
            if self._writer_db is None or self._writer_db.conn is not conn:
                self._writer_db = sqlite_utils.Database(conn)
            return self._writer_db
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite_utils.Database(self._connect())
            self._local.db = db
        return db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """A write transaction; when the block exits, it is durable (or it raised)."""
        with self._group.transaction():
            yield self.db

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` in a write transaction on the writer thread (group_commit.py): for the
        event loop, which awaits the future; it settles only once the write is durable."""
        return self._group.submit(fn)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the current transaction is durable (at once outside one)."""
        self._group.after_commit(callback)

    def fetch_one(self, sql: str, params: tuple | dict = ()) -> Row | None:
        """The first row of a query as a dict, on this thread's connection (inside its
        transaction when one is open), or None."""
        row = self.db.execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    def fetch_all(self, sql: str, params: tuple | dict = ()) -> list[Row]:
        """Every row of a query as dicts, on this thread's connection."""
        return [dict(r) for r in self.db.execute(sql, params).fetchall()]

    def _rows(
        self, table: str, where: str | None, params: list[Any], order_by: str, limit: int
    ) -> list[Row]:
        """A listing through sqlite-utils' `rows_where`, on this thread's connection."""
        return list(self.db.table(table).rows_where(where, params, order_by=order_by, limit=limit))

    def close(self) -> None:
        """Close this thread's connection and the writer connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None
        self._group.close()
        self._writer_db = None

    # -- events ----------------------------------------------------------------------------
    def log_event(
        self,
        kind: str,
        project_id: int | None = None,
        agent_id: int | None = None,
        data: dict[str, Any] | None = None,
        db: sqlite_utils.Database | None = None,
    ) -> Row:
        target = db or self.db
        row = {
            "at": self.clock.now(),
            "project_id": project_id,
            "agent_id": agent_id,
            "kind": kind,
            "data": json.dumps(data or {}, ensure_ascii=False),
        }
        if db is None:
            with self.transaction() as tx:
                row["id"] = insert_row(tx, "events", row)
        else:
            row["id"] = insert_row(target, "events", row)
        return {**row, "data": data or {}}  # as list_events gives it: an object, not its text

    def list_events(
        self,
        project_id: int | None = None,
        limit: int = 100,
        kind: str | None = None,
        agent_id: int | None = None,
    ) -> list[Row]:
        where, params = match(
            {"project_id": project_id, "agent_id": agent_id, "kind": kind or None}
        )
        rows = self._rows("events", where, params, "id DESC", limit)
        for row in rows:
            row["data"] = json.loads(row["data"] or "{}")
        return rows

    # -- projects --------------------------------------------------------------------------
    def upsert_project(
        self,
        name: str,
        path: str = "",
        spec_path: str | None = None,
        start_branch: str | None = None,
    ) -> Row:
        now = self.clock.now()
        with self.transaction() as db:
            existing = self.fetch_one("SELECT * FROM projects WHERE name = ?", (name,))
            if existing is None:
                pk = insert_row(
                    db,
                    "projects",
                    {
                        "name": name,
                        "path": path,
                        "spec_path": spec_path,
                        "start_branch": start_branch,
                        "state": "created",
                        "created_at": now,
                        "updated_at": now,
                    },
                )
                self.log_event("project.created", pk, data={"path": path}, db=db)
            else:
                pk = existing["id"]
                changes = {
                    k: v
                    for k, v in {
                        "path": path or None,
                        "spec_path": spec_path,
                        "start_branch": start_branch,
                    }.items()
                    if v
                }
                if changes:
                    db.table("projects").update(pk, {**changes, "updated_at": now})
        return self.get_project_by_id(pk)

    def get_project_by_id(self, project_id: int) -> Row:
        row = self.fetch_one("SELECT * FROM projects WHERE id = ?", (project_id,))
        if row is None:
            raise NotFound(f"no project with id {project_id}")
        return row

    def get_project(self, name: str) -> Row:
        row = self.fetch_one("SELECT * FROM projects WHERE name = ?", (name,))
        if row is None:
            known = ", ".join(p["name"] for p in self.list_projects()) or "none yet"
            raise NotFound(f"unknown project '{name}' (known: {known})")
        return row

    def list_projects(self) -> list[Row]:
        return self.fetch_all("SELECT * FROM projects ORDER BY id")

    def set_project_state(self, project_id: int, state: str) -> None:
        with self.transaction() as db:
            db.table("projects").update(
                project_id, {"state": state, "updated_at": self.clock.now()}
            )
            self.log_event("project.state", project_id, data={"state": state}, db=db)

    def set_project_setting(self, project_id: int, key: str, value: Any) -> Row:
        """One entry of the project's `settings` (JSON); None removes it."""
        with self.transaction() as db:
            row = db.execute("SELECT settings FROM projects WHERE id = ?", (project_id,)).fetchone()
            settings = project_settings({"settings": row[0] if row else None})
            if value is None:
                settings.pop(key, None)
            else:
                settings[key] = value
            db.table("projects").update(project_id, {"settings": json.dumps(settings)})
            self.log_event(f"project.{key}_set", project_id, data={key: value}, db=db)
        return self.get_project_by_id(project_id)

    # -- agents ----------------------------------------------------------------------------
    def register_agent(self, project_id: int, role: str, profile: str = "demo") -> tuple[Row, str]:
        """Create the agent, or give an existing one a fresh token (the old one stops working).
        Each agent gets a `session_id`, the id of its Claude Code conversation, once."""
        token = new_token("ava")
        now = self.clock.now()
        with self.transaction() as db:
            existing = self.fetch_one(
                "SELECT * FROM agents WHERE project_id = ? AND role = ?", (project_id, role)
            )
            if existing is None:
                pk = insert_row(
                    db,
                    "agents",
                    {
                        "project_id": project_id,
                        "role": role,
                        "profile": profile,
                        "token_hash": hash_token(token),
                        "state": "registered",
                        "created_at": now,
                        "last_seen_at": None,
                        "session_id": str(uuid.uuid4()),
                    },
                )
                self.log_event("agent.registered", project_id, pk, {"role": role}, db=db)
            else:
                pk = existing["id"]
                fields = {"token_hash": hash_token(token), "profile": profile}
                if not existing.get("session_id"):
                    fields["session_id"] = str(uuid.uuid4())
                db.table("agents").update(pk, fields)
        return self.get_agent_by_id(pk), token

    def get_agent_by_id(self, agent_id: int) -> Row:
        row = self.fetch_one("SELECT * FROM agents WHERE id = ?", (agent_id,))
        if row is None:
            raise NotFound(f"no agent with id {agent_id}")
        return row

    def agent_by_token(self, token: str) -> Row | None:
        return self.fetch_one("SELECT * FROM agents WHERE token_hash = ?", (hash_token(token),))

    def get_agent(self, project_id: int, role: str) -> Row:
        row = self.fetch_one(
            "SELECT * FROM agents WHERE project_id = ? AND role = ?", (project_id, role)
        )
        if row is None:
            roles = [a["role"] for a in self.list_agents(project_id)]
            known = ", ".join(roles) or "no agents yet"
            raise NotFound(f"unknown agent '{role}' in this project (known: {known})")
        return row

    def list_agents(self, project_id: int | None = None) -> list[Row]:
        if project_id is None:
            return self.fetch_all("SELECT * FROM agents ORDER BY project_id, id")
        return self.fetch_all(
            "SELECT * FROM agents WHERE project_id = ? ORDER BY id", (project_id,)
        )

    def update_agent(self, agent_id: int, **fields: Any) -> Row:
        with self.transaction() as db:
            db.table("agents").update(agent_id, fields)
        return self.get_agent_by_id(agent_id)

    def touch_agent(self, agent_id: int, **fields: Any) -> None:
        """Record a sign of life (heartbeat) and optional state fields."""
        with self.transaction() as db:
            db.table("agents").update(agent_id, {"last_seen_at": self.clock.now(), **fields})

    # -- messages --------------------------------------------------------------------------
    def add_message(
        self,
        project_id: int,
        sender: str,
        recipient_id: int,
        body: str,
        kind: str = "message",
        idempotency_key: str | None = None,
        db: sqlite_utils.Database | None = None,
        checkin_id: int | None = None,
    ) -> tuple[Row, bool]:
        """Queue a message. Returns (message, created); a repeated idempotency key returns the
        first message and created=False."""
        if db is None:
            with self.transaction() as tx:
                return self.add_message(
                    project_id,
                    sender,
                    recipient_id,
                    body,
                    kind,
                    idempotency_key,
                    db=tx,
                    checkin_id=checkin_id,
                )
        if idempotency_key:
            first = self.fetch_one(
                "SELECT * FROM messages WHERE project_id = ? AND sender = ? "
                "AND idempotency_key = ?",
                (project_id, sender, idempotency_key),
            )
            if first is not None:
                return first, False
        now = self.clock.now()
        pk = insert_row(
            db,
            "messages",
            {
                "project_id": project_id,
                "sender": sender,
                "recipient_id": recipient_id,
                "body": body,
                "kind": kind,
                "state": MessageState.QUEUED.value,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "idempotency_key": idempotency_key,
                "checkin_id": checkin_id,
                "marker": "",
            },
        )
        marker = new_marker(pk)
        db.execute("UPDATE messages SET marker = ? WHERE id = ?", (marker, pk))
        return self.get_message(pk), True

    def get_message(self, message_id: int) -> Row:
        row = self.fetch_one("SELECT * FROM messages WHERE id = ?", (message_id,))
        if row is None:
            raise NotFound(f"no message with id {message_id}")
        return row

    def list_messages(
        self,
        project_id: int | None = None,
        recipient_id: int | None = None,
        state: str | None = None,
        limit: int = 50,
        party: tuple[int, str] | None = None,
    ) -> list[Row]:
        """`party` (agent id, role): only the messages that agent sent or receives."""
        extra = None if party is None else ("(recipient_id = ? OR sender = ?)", list(party))
        where, params = match(
            {"project_id": project_id, "recipient_id": recipient_id, "state": state}, extra
        )
        return self._rows("messages", where, params, "id DESC", limit)

    def pending_messages(self, recipient_id: int) -> list[Row]:
        return self.fetch_all(
            "SELECT * FROM messages WHERE recipient_id = ? AND state IN (?, ?) ORDER BY id",
            (recipient_id, *PENDING_STATES),
        )

    def count_messages_by_state(self) -> dict[str, int]:
        rows = self.fetch_all("SELECT state, COUNT(*) AS n FROM messages GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    def has_pending(self, agent_id: int) -> bool:
        """Whether the agent has a message queued or leased: one indexed read, no lock."""
        row = self.fetch_one(
            "SELECT 1 AS x FROM messages WHERE recipient_id = ? AND state IN (?, ?) LIMIT 1",
            (agent_id, *PENDING_STATES),
        )
        return row is not None

    def next_lease_expiry(self, agent_id: int) -> float | None:
        """When the earliest lease on the agent's messages runs out, if one is held."""
        row = self.fetch_one(
            "SELECT MIN(lease_expires_at) AS at FROM messages WHERE recipient_id = ? AND state = ?",
            (agent_id, MessageState.LEASED.value),
        )
        return None if row is None or row["at"] is None else float(row["at"])

    def held_lease(self, agent_id: int) -> Row | None:
        """The agent's message under an unexpired lease, if any (with its lease_id)."""
        return self.fetch_one(
            "SELECT * FROM messages WHERE recipient_id = ? AND state = ? "
            "AND lease_expires_at > ? ORDER BY id LIMIT 1",
            (agent_id, MessageState.LEASED.value, self.clock.now()),
        )

    def lease_next(self, agent_id: int, lease_s: float, max_attempts: int) -> Row | None:
        """Lease the recipient's oldest pending message, in order, one at a time.

        Nothing is handed out while an earlier message is under an unexpired lease, so the pane
        sees messages in the order they were accepted. Returns the message with its lease_id.
        """
        now = self.clock.now()
        # A plain read first: an empty inbox (the common case for a long-poll re-check) then
        # costs no write lock.
        if not self.has_pending(agent_id):
            return None
        with self.transaction() as db:
            agent = self.fetch_one("SELECT paused_until FROM agents WHERE id = ?", (agent_id,))
            if agent and agent["paused_until"] and agent["paused_until"] > now:
                return None
            # agentvisor's own notice ("your usage limit has reset") comes before what was held
            # meanwhile: wait for the scheduler to fire one just due (it does within
            # milliseconds; never longer than NOTICE_WAIT_S), then take it first.
            if self.fetch_one(
                "SELECT 1 AS x FROM checkins WHERE recipient_id = ? AND creator = ? "
                "AND state = 'pending' AND due_at <= ? AND due_at > ? LIMIT 1",
                (agent_id, AGENTVISOR, now, now - NOTICE_WAIT_S),
            ):
                return None
            while True:
                head = self.fetch_one(
                    "SELECT * FROM messages WHERE recipient_id = ? AND state IN (?, ?) "
                    "ORDER BY (state = ?) DESC, (sender = ?) DESC, id LIMIT 1",
                    (agent_id, *PENDING_STATES, MessageState.LEASED.value, AGENTVISOR),
                )
                if head is None:
                    return None
                if head["state"] == MessageState.LEASED and head["lease_expires_at"] > now:
                    return None
                if head["attempts"] >= max_attempts:
                    self._give_up(db, head, f"not acknowledged after {head['attempts']} attempts")
                    continue
                lease_id = secrets.token_hex(8)
                db.execute(
                    "UPDATE messages SET state = ?, lease_id = ?, lease_expires_at = ?, "
                    "attempts = attempts + 1, leases = leases + 1, updated_at = ? WHERE id = ?",
                    (
                        transition(head["state"], Event.LEASE).value,
                        lease_id,
                        now + lease_s,
                        now,
                        head["id"],
                    ),
                )
                return self.get_message(head["id"])

    def _give_up(self, db: sqlite_utils.Database, message: Row, reason: str) -> None:
        state = transition(message["state"], Event.GIVE_UP)
        db.execute(
            "UPDATE messages SET state = ?, last_error = ?, lease_id = NULL, "
            "updated_at = ? WHERE id = ?",
            (state.value, reason, self.clock.now(), message["id"]),
        )
        self.log_event(
            "message.failed",
            message["project_id"],
            message["recipient_id"],
            {"message_id": message["id"], "reason": reason},
            db=db,
        )

    def _leased_message(self, agent_id: int, message_id: int, lease_id: str) -> Row:
        message = self.fetch_one("SELECT * FROM messages WHERE id = ?", (message_id,))
        if message is None or message["recipient_id"] != agent_id:
            raise NotFound(f"message {message_id} is not in your inbox")
        if message["lease_id"] != lease_id:
            raise Conflict(
                f"lease {lease_id} on message {message_id} is no longer valid "
                "(it expired and was handed out again); lease the message again"
            )
        return message

    def ack(self, agent_id: int, message_id: int, lease_id: str) -> Row:
        with self.transaction() as db:
            message = self._leased_message(agent_id, message_id, lease_id)
            if message["state"] == MessageState.DELIVERED:
                return message
            state = transition(message["state"], Event.ACK)
            now = self.clock.now()
            db.execute(
                "UPDATE messages SET state = ?, delivered_at = ?, lease_expires_at = NULL,"
                " updated_at = ? WHERE id = ?",
                (state.value, now, now, message_id),
            )
        return self.get_message(message_id)

    def nack(
        self,
        agent_id: int,
        message_id: int,
        lease_id: str,
        reason: str,
        retry: bool,
        max_attempts: int,
    ) -> Row:
        with self.transaction() as db:
            message = self._leased_message(agent_id, message_id, lease_id)
            if message["state"] != MessageState.LEASED:
                raise Conflict(f"message {message_id} is {message['state']}, not leased")
            if not retry or message["attempts"] >= max_attempts:
                self._give_up(db, message, reason)
            else:
                state = transition(message["state"], Event.NACK_RETRY)
                db.execute(
                    "UPDATE messages SET state = ?, lease_id = NULL, lease_expires_at ="
                    " NULL, last_error = ?, updated_at = ? WHERE id = ?",
                    (state.value, reason, self.clock.now(), message_id),
                )
                self.log_event(
                    "message.nack",
                    message["project_id"],
                    agent_id,
                    {"message_id": message_id, "reason": reason},
                    db=db,
                )
        return self.get_message(message_id)

    def release_leases(self, agent_id: int) -> int:
        """Hand the agent's leased messages back (its shim restarted: the old leases belong to a
        process that is gone). The shim's marker check keeps this from typing anything twice."""
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE messages SET state = ?, lease_id = NULL, lease_expires_at = NULL, "
                "updated_at = ? WHERE recipient_id = ? AND state = ?",
                (MessageState.QUEUED.value, self.clock.now(), agent_id, MessageState.LEASED.value),
            )
            return cursor.rowcount

    def extend_lease(self, agent_id: int, message_id: int, lease_id: str, lease_s: float) -> Row:
        with self.transaction() as db:
            message = self._leased_message(agent_id, message_id, lease_id)
            if message["state"] != MessageState.LEASED:
                raise Conflict(f"message {message_id} is {message['state']}, not leased")
            db.execute(
                "UPDATE messages SET lease_expires_at = ? WHERE id = ?",
                (self.clock.now() + lease_s, message_id),
            )
        return self.get_message(message_id)

    def set_message_state(self, message_id: int, event: Event, project_id: int | None) -> Row:
        """Operator actions: cancel a queued message, or retry a failed/cancelled one."""
        with self.transaction() as db:
            message = self.get_message(message_id)
            if project_id is not None and message["project_id"] != project_id:
                raise NotFound(f"no message with id {message_id} in this project")
            state = transition(message["state"], event)
            db.execute(
                "UPDATE messages SET state = ?, updated_at = ?, attempts = CASE WHEN ? "
                "THEN 0 ELSE attempts END WHERE id = ?",
                (state.value, self.clock.now(), event == Event.RETRY, message_id),
            )
        return self.get_message(message_id)

    # -- check-ins -------------------------------------------------------------------------
    def add_checkin(
        self,
        project_id: int,
        creator: str,
        recipient_id: int,
        note: str,
        due_at: float,
        every_s: float | None = None,
        idempotency_key: str | None = None,
        created_by: int | None = None,
    ) -> tuple[Row, bool]:
        """Schedule a check-in. `created_by`: the agent that asked for it; None for the
        operator and for agentvisor, whose check-ins no agent may cancel."""
        with self.transaction() as db:
            if idempotency_key:
                first = self.fetch_one(
                    "SELECT * FROM checkins WHERE project_id = ? AND creator = ? "
                    "AND idempotency_key = ?",
                    (project_id, creator, idempotency_key),
                )
                if first is not None:
                    return first, False
            now = self.clock.now()
            pk = insert_row(
                db,
                "checkins",
                {
                    "project_id": project_id,
                    "creator": creator,
                    "created_by": created_by,
                    "recipient_id": recipient_id,
                    "note": note,
                    "due_at": due_at,
                    "every_s": every_s,
                    "state": "pending",
                    "fired_count": 0,
                    "created_at": now,
                    "idempotency_key": idempotency_key,
                },
            )
        return self.get_checkin(pk), True

    def get_checkin(self, checkin_id: int) -> Row:
        row = self.fetch_one("SELECT * FROM checkins WHERE id = ?", (checkin_id,))
        if row is None:
            raise NotFound(f"no check-in with id {checkin_id}")
        return row

    def list_checkins(
        self,
        project_id: int | None = None,
        state: str | None = "pending",
        recipient_id: int | None = None,
        limit: int = 200,
        party: int | None = None,
    ) -> list[Row]:
        """`party`: only the check-ins this agent scheduled or receives."""
        extra = None if party is None else ("(created_by = ? OR recipient_id = ?)", [party] * 2)
        where, params = match(
            {"project_id": project_id, "state": state, "recipient_id": recipient_id}, extra
        )
        return self._rows("checkins", where, params, "due_at", limit)

    def cancel_checkin(self, checkin_id: int, project_id: int | None = None) -> Row:
        with self.transaction() as db:
            row = self.get_checkin(checkin_id)
            if project_id is not None and row["project_id"] != project_id:
                raise NotFound(f"no check-in with id {checkin_id} in this project")
            if row["state"] != "pending":
                raise Conflict(f"check-in {checkin_id} is already {row['state']}")
            db.execute("UPDATE checkins SET state = 'cancelled' WHERE id = ?", (checkin_id,))
        return self.get_checkin(checkin_id)

    def count_pending_checkins(self) -> int:
        row = self.fetch_one("SELECT COUNT(*) AS n FROM checkins WHERE state = 'pending'")
        return int(row["n"]) if row else 0

    def next_due_at(self) -> float | None:
        # Numbers sort before text in SQLite: `< ''` skips a due_at stored as text, which
        # fire_due sets aside.
        row = self.fetch_one(
            "SELECT MIN(due_at) AS due FROM checkins WHERE state = 'pending' AND due_at < ''"
        )
        due = row["due"] if row else None
        return float(due) if isinstance(due, int | float) else None

    def fire_due(self, now: float | None = None, limit: int = 500) -> list[Fired]:
        """Turn due check-ins into messages, in the same transaction that advances or closes them.

        Safe against a second process doing the same: the rows are re-read under the write lock.
        A row that cannot fire (a due_at that is not a finite number, a repeat under 0.1 s,
        a recipient that is gone) is set aside in state `failed` with a `checkin.failed`
        event, and the others fire: one bad row never stops the schedule.
        """
        now = self.clock.now() if now is None else now
        fired: list[Fired] = []
        with self.transaction() as db:
            # Due by time, or unusable as a time at all (text, blob or NULL sort after numbers).
            due = self.fetch_all(
                "SELECT id FROM checkins WHERE state = 'pending' AND (due_at <= ? "
                "OR due_at >= '' OR due_at IS NULL) ORDER BY due_at, id LIMIT ?",
                (now, limit),
            )
            for (checkin_id,) in ((r["id"],) for r in due):
                db.execute("SAVEPOINT fire_one")
                try:
                    fired.append(self._fire_one(db, checkin_id, now))
                    db.execute("RELEASE fire_one")
                except Exception as exc:
                    db.execute("ROLLBACK TO fire_one")
                    db.execute("RELEASE fire_one")
                    if isinstance(exc, sqlite3.OperationalError):
                        raise  # the database itself (locked, full): the whole pass retries
                    self._set_aside(db, checkin_id, exc)
        return fired

    def _fire_one(self, db: sqlite_utils.Database, checkin_id: int, now: float) -> Fired:
        checkin = self.fetch_one("SELECT * FROM checkins WHERE id = ?", (checkin_id,))
        assert checkin is not None  # read under the write lock just before
        problem = unfireable(checkin["due_at"], checkin["every_s"])
        if problem is not None:
            raise ValueError(problem)
        firing = plan_firing(checkin["due_at"], checkin["every_s"], now)
        if firing.next_due_at is not None and not now < firing.next_due_at < math.inf:
            raise ValueError(f"its next occurrence ({firing.next_due_at!r}) is not after now")
        message, _ = self.add_message(
            checkin["project_id"],
            checkin["creator"],
            checkin["recipient_id"],
            checkin_text(str(checkin["note"]), firing),
            kind="checkin",
            db=db,
            checkin_id=checkin["id"],
        )
        db.execute(
            "UPDATE checkins SET due_at = COALESCE(?, due_at), state = ?, "
            "fired_count = fired_count + 1, last_fired_at = ? WHERE id = ?",
            (
                firing.next_due_at,
                "pending" if firing.next_due_at else "fired",
                now,
                checkin["id"],
            ),
        )
        return Fired(checkin["id"], message)

    def _set_aside(self, db: sqlite_utils.Database, checkin_id: int, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}".encode("utf-8", "backslashreplace").decode()
        row = self.fetch_one(
            "SELECT project_id, recipient_id FROM checkins WHERE id = ?", (checkin_id,)
        )
        db.execute("UPDATE checkins SET state = 'failed' WHERE id = ?", (checkin_id,))
        project_id, agent_id = (row["project_id"], row["recipient_id"]) if row else (None, None)
        self.log_event(
            "checkin.failed",
            project_id if isinstance(project_id, int) else None,
            agent_id if isinstance(agent_id, int) else None,
            {"checkin_id": checkin_id, "reason": reason[:500]},
            db=db,
        )
        log.warning("check-in %s cannot fire and was set aside (failed): %s", checkin_id, reason)

    # -- sanity ----------------------------------------------------------------------------
    def check_writable(self) -> None:
        with self.transaction() as db:
            db.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")


def project_settings(project: Row) -> dict[str, Any]:
    """The project's own settings (JSON in `projects.settings`): budget, model, ..."""
    try:
        data = json.loads(project.get("settings") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
