"""Schema versions and forward migrations of the store. Each migration runs once, in order,
inside the caller's transaction; the version lives in the `meta` table."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import sqlite_utils

from agentvisor.errors import AgentvisorError


def _v1(db: sqlite_utils.Database) -> None:
    db.table("projects").create(
        {
            "id": int,
            "name": str,
            "path": str,
            "spec_path": str,
            "start_branch": str,
            "state": str,
            "created_at": float,
            "updated_at": float,
            "settings": str,
        },
        pk="id",
        not_null={"name", "state"},
    )
    db.table("projects").create_index(["name"], unique=True)
    db.table("agents").create(
        {
            "id": int,
            "project_id": int,
            "role": str,
            "profile": str,
            "container": str,
            "token_hash": str,
            "state": str,
            "last_seen_at": float,
            "created_at": float,
            "paused_until": float,
            "session_id": str,
            "pane_changed_at": float,
            "info": str,
        },
        pk="id",
        foreign_keys=[("project_id", "projects", "id")],
        not_null={"project_id", "role", "token_hash"},
    )
    db.table("agents").create_index(["project_id", "role"], unique=True)
    db.table("agents").create_index(["token_hash"], unique=True)
    db.table("checkins").create(
        {
            "id": int,
            "project_id": int,
            "creator": str,
            "recipient_id": int,
            "note": str,
            "due_at": float,
            "every_s": float,
            "state": str,
            "fired_count": int,
            "last_fired_at": float,
            "created_at": float,
            "idempotency_key": str,
        },
        pk="id",
        foreign_keys=[("project_id", "projects", "id"), ("recipient_id", "agents", "id")],
        not_null={"project_id", "recipient_id", "note", "due_at", "state"},
    )
    db.table("checkins").create_index(["state", "due_at"])
    db.table("checkins").create_index(["project_id", "creator", "idempotency_key"], unique=True)
    db.table("messages").create(
        {
            "id": int,
            "project_id": int,
            "sender": str,
            "recipient_id": int,
            "body": str,
            "kind": str,
            "state": str,
            "attempts": int,
            "lease_id": str,
            "lease_expires_at": float,
            "created_at": float,
            "updated_at": float,
            "delivered_at": float,
            "last_error": str,
            "idempotency_key": str,
            "checkin_id": int,
            "marker": str,
        },
        pk="id",
        foreign_keys=[("project_id", "projects", "id"), ("recipient_id", "agents", "id")],
        not_null={"project_id", "recipient_id", "body", "state"},
    )
    db.table("messages").create_index(["recipient_id", "state", "id"])
    db.table("messages").create_index(["project_id", "sender", "idempotency_key"], unique=True)
    db.table("events").create(
        {
            "id": int,
            "at": float,
            "project_id": int,
            "agent_id": int,
            "kind": str,
            "data": str,
        },
        pk="id",
    )
    db.table("events").create_index(["project_id", "id"])
    # The event log is append-only.
    db.execute(
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
        "BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
        "BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END"
    )


def _v2(db: sqlite_utils.Database) -> None:
    """The project queue, and the watchdog's nudge requests."""
    db.table("queue").create(
        {
            "id": int,
            "spec_path": str,
            "project_dir": str,
            "options": str,
            "state": str,
            "attempts": int,
            "max_attempts": int,
            "project": str,
            "current_spec": str,
            "created_at": float,
            "started_at": float,
            "deadline_at": float,
            "finished_at": float,
            "last_error": str,
            "escalated_at": float,
        },
        pk="id",
        not_null={"spec_path", "state"},
    )
    db.table("queue").create_index(["state", "id"])
    db.execute("ALTER TABLE agents ADD COLUMN nudge_at REAL")


def _v3(db: sqlite_utils.Database) -> None:
    """Every agent has the id of its Claude Code conversation (`--session-id`, `--resume`)."""
    rows = db.execute("SELECT id FROM agents WHERE session_id IS NULL OR session_id = ''")
    for (agent_id,) in rows.fetchall():
        db.execute("UPDATE agents SET session_id = ? WHERE id = ?", (str(uuid.uuid4()), agent_id))


def _v4(db: sqlite_utils.Database) -> None:
    """Every message counts the leases it was ever handed out under (`attempts` restarts at
    an operator's retry; this never does). A shim given a message's first lease knows no one
    typed it before. Messages from before count one more, so their first lease is not taken
    for a first one."""
    if "leases" not in db.table("messages").columns_dict:
        db.execute("ALTER TABLE messages ADD COLUMN leases INTEGER NOT NULL DEFAULT 0")
        db.execute("UPDATE messages SET leases = attempts + 1")


def _v5(db: sqlite_utils.Database) -> None:
    """What the model broker counted, one row per request to the model API, and why an agent
    is paused (a usage limit, a budget)."""
    if "model_usage" in db.table_names():
        return
    db.table("model_usage").create(
        {
            "id": int,
            "at": float,
            "project_id": int,
            "agent_id": int,
            "path": str,
            "status": int,
            "input_tokens": int,
            "output_tokens": int,
            "cache_creation_tokens": int,
            "cache_read_tokens": int,
            "model": str,
            "error": str,
            "reset_at": float,
            "first_byte_ms": float,
            "duration_ms": float,
        },
        pk="id",
        not_null={"at", "project_id", "agent_id", "status"},
    )
    db.table("model_usage").create_index(["agent_id", "at"])
    db.table("model_usage").create_index(["project_id", "at"])
    db.execute("ALTER TABLE agents ADD COLUMN paused_reason TEXT")


def _v6(db: sqlite_utils.Database) -> None:
    """The operator's egress allowlist per project (`agentvisor egress allow`, `up --allow`)."""
    db.table("egress_rules").create(
        {"id": int, "project_id": int, "entry": str, "created_at": float, "origin": str},
        pk="id",
        foreign_keys=[("project_id", "projects", "id")],
        not_null={"project_id", "entry"},
        if_not_exists=True,
    )
    db.table("egress_rules").create_index(["project_id", "entry"], unique=True, if_not_exists=True)
    db.table("events").create_index(["kind", "id"], if_not_exists=True)


def _v7(db: sqlite_utils.Database) -> None:
    """Every check-in knows the agent that scheduled it (`created_by`, NULL: the operator or
    agentvisor); an agent may cancel only its own. Rows from before get the agent their
    `creator` names, which was always the caller's own role; any other row counts as the
    operator's."""
    if "created_by" in db.table("checkins").columns_dict:
        return
    db.execute("ALTER TABLE checkins ADD COLUMN created_by INTEGER REFERENCES agents(id)")
    db.execute(
        "UPDATE checkins SET created_by = (SELECT agents.id FROM agents "
        "WHERE agents.project_id = checkins.project_id AND agents.role = checkins.creator) "
        "WHERE creator NOT IN ('operator', 'agentvisor')"
    )


MIGRATIONS: list[tuple[int, Callable[[sqlite_utils.Database], None]]] = [
    (1, _v1),
    (2, _v2),
    (3, _v3),
    (4, _v4),
    (5, _v5),
    (6, _v6),
    (7, _v7),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def current_version(db: sqlite_utils.Database) -> int:
    if "meta" not in db.table_names():
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite_utils.Database) -> int:
    """Bring the schema up to SCHEMA_VERSION. Refuses a database from a newer agentvisor."""
    if "meta" not in db.table_names():
        db.table("meta").create({"key": str, "value": str}, pk="key")
    version = current_version(db)
    if version > SCHEMA_VERSION:
        raise AgentvisorError(
            f"the state database has schema version {version}, newer than this agentvisor "
            f"understands ({SCHEMA_VERSION}); upgrade agentvisor or use another --state"
        )
    for target, step in MIGRATIONS:
        if target > version:
            step(db)
            db.table("meta").upsert({"key": "schema_version", "value": str(target)}, pk="key")
            version = target
    return version
