"""Who owns a check-in, also for rows from before schema v7 recorded it."""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from agentvisor.clock import FakeClock
from agentvisor.store.database import Store
from agentvisor.store.migrations import MIGRATIONS


def _schema_6_database(path: Path) -> None:
    """A state database as agentvisor wrote it before check-ins recorded their agent."""
    db = sqlite_utils.Database(path)
    db.table("meta").create({"key": str, "value": str}, pk="key")
    for version, step in MIGRATIONS:
        if version <= 6:
            step(db)
    db.table("meta").upsert({"key": "schema_version", "value": "6"}, pk="key")
    db.execute("INSERT INTO projects (id, name, state) VALUES (1, 'old', 'running')")
    for agent_id, role in ((1, "orchestrator"), (2, "developer")):
        db.execute(
            "INSERT INTO agents (id, project_id, role, token_hash) VALUES (?, 1, ?, ?)",
            (agent_id, role, f"hash-{role}"),
        )
    for checkin_id, creator in (
        (1, "operator"),  # a routine check-in
        (2, "developer"),  # the developer's own
        (3, "gone-role"),  # an agent no longer known
        (4, "agentvisor"),
    ):
        db.execute(
            "INSERT INTO checkins (id, project_id, creator, recipient_id, note, due_at, state) "
            "VALUES (?, 1, ?, 1, 'n', 1e9, 'pending')",
            (checkin_id, creator),
        )
    db.conn.commit()
    db.close()


def test_check_ins_from_before_schema_7_keep_their_agent_and_unknown_ones_are_the_operators(
    tmp_path: Path,
):
    path = tmp_path / "agentvisor.db"
    _schema_6_database(path)

    store = Store(path, FakeClock(1_800_000_000.0))

    owners = {c["id"]: c["created_by"] for c in store.list_checkins(state=None)}
    assert owners == {1: None, 2: 2, 3: None, 4: None}
    version = store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert int(version[0]) == 7


def test_a_new_check_in_records_the_agent_that_scheduled_it(tmp_path: Path):
    store = Store(tmp_path / "agentvisor.db", FakeClock(1_800_000_000.0))
    project = store.upsert_project("p", "")
    agent, _ = store.register_agent(project["id"], "developer")
    own, _ = store.add_checkin(
        project["id"], "developer", agent["id"], "n", 2e9, created_by=agent["id"]
    )
    operators, _ = store.add_checkin(project["id"], "operator", agent["id"], "n", 2e9)
    assert own["created_by"] == agent["id"]
    assert operators["created_by"] is None
