from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from agentvisor.clock import FakeClock
from agentvisor.core.delivery import Event, transition
from agentvisor.errors import Conflict, NotFound
from agentvisor.store.database import AGENTVISOR, Store
from agentvisor.store.migrations import SCHEMA_VERSION


@pytest.fixture
def team(store: Store) -> dict[str, int]:
    project = store.upsert_project("demo", "/tmp/demo")
    ids = {"project": project["id"]}
    for role in ("orchestrator", "developer", "tester"):
        agent, _ = store.register_agent(project["id"], role)
        ids[role] = agent["id"]
    return ids


def test_database_is_wal_with_schema_version(store: Store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    version = store.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION


def test_reopening_database_keeps_data_and_does_not_remigrate(tmp_path: Path, clock: FakeClock):
    first = Store(tmp_path / "a.db", clock)
    first.upsert_project("demo", "/x")
    first.close()
    second = Store(tmp_path / "a.db", clock)
    assert [p["name"] for p in second.list_projects()] == ["demo"]


def test_newer_schema_is_refused_with_clear_message(tmp_path: Path, clock: FakeClock):
    store = Store(tmp_path / "a.db", clock)
    store.db.execute("UPDATE meta SET value='999' WHERE key='schema_version'")
    store.close()
    with pytest.raises(Exception, match="newer than this agentvisor"):
        Store(tmp_path / "a.db", clock)


def test_same_idempotency_key_returns_first_message(store: Store, team: dict[str, int]):
    first, created = store.add_message(
        team["project"], "operator", team["developer"], "a", idempotency_key="k"
    )
    again, created_again = store.add_message(
        team["project"], "operator", team["developer"], "different body", idempotency_key="k"
    )
    assert created and not created_again
    assert again["id"] == first["id"] and again["body"] == "a"
    assert len(store.pending_messages(team["developer"])) == 1


def test_same_idempotency_key_returns_first_checkin(store: Store, team: dict[str, int]):
    first, _ = store.add_checkin(
        team["project"], "developer", team["developer"], "n", 10.0, idempotency_key="loop"
    )
    again, created = store.add_checkin(
        team["project"], "developer", team["developer"], "n", 99.0, idempotency_key="loop"
    )
    assert not created and again["id"] == first["id"]
    assert store.count_pending_checkins() == 1


def test_messages_are_leased_in_order_one_at_a_time(store: Store, team: dict[str, int]):
    for body in ("one", "two", "three"):
        store.add_message(team["project"], "operator", team["developer"], body)
    got = []
    while (lease := store.lease_next(team["developer"], 60, 5)) is not None:
        assert store.lease_next(team["developer"], 60, 5) is None  # head still leased
        got.append(lease["body"])
        store.ack(team["developer"], lease["id"], lease["lease_id"])
    assert got == ["one", "two", "three"]


def test_expired_lease_is_redelivered(store: Store, team: dict[str, int], clock: FakeClock):
    store.add_message(team["project"], "operator", team["developer"], "hello")
    first = store.lease_next(team["developer"], 30, 5)
    clock.advance(31)
    second = store.lease_next(team["developer"], 30, 5)
    assert second is not None and second["id"] == first["id"]
    assert second["lease_id"] != first["lease_id"] and second["attempts"] == 2
    with pytest.raises(Conflict, match="no longer valid"):
        store.ack(team["developer"], first["id"], first["lease_id"])
    assert store.ack(team["developer"], second["id"], second["lease_id"])["state"] == "delivered"


def test_message_fails_after_max_attempts_and_next_one_flows(store: Store, team, clock):
    store.add_message(team["project"], "operator", team["developer"], "poison")
    store.add_message(team["project"], "operator", team["developer"], "next")
    for _ in range(3):
        store.lease_next(team["developer"], 10, 3)
        clock.advance(11)
    lease = store.lease_next(team["developer"], 10, 3)
    assert lease["body"] == "next"
    failed = store.list_messages(state="failed")
    assert [m["body"] for m in failed] == ["poison"]
    assert "3 attempts" in failed[0]["last_error"]


def test_nack_with_retry_requeues_and_without_fails(store: Store, team: dict[str, int]):
    store.add_message(team["project"], "operator", team["developer"], "x")
    lease = store.lease_next(team["developer"], 60, 5)
    assert (
        store.nack(team["developer"], lease["id"], lease["lease_id"], "pane busy", True, 5)["state"]
        == "queued"
    )
    lease = store.lease_next(team["developer"], 60, 5)
    failed = store.nack(team["developer"], lease["id"], lease["lease_id"], "bad", False, 5)
    assert failed["state"] == "failed" and failed["last_error"] == "bad"


def test_agent_cannot_ack_message_of_another_agent(store: Store, team: dict[str, int]):
    store.add_message(team["project"], "operator", team["developer"], "x")
    lease = store.lease_next(team["developer"], 60, 5)
    with pytest.raises(NotFound):
        store.ack(team["tester"], lease["id"], lease["lease_id"])


def test_paused_agent_gets_nothing_until_resume(store: Store, team, clock: FakeClock):
    store.add_message(team["project"], "operator", team["developer"], "held")
    store.update_agent(team["developer"], paused_until=clock.now() + 600)
    assert store.lease_next(team["developer"], 60, 5) is None
    clock.advance(601)
    assert store.lease_next(team["developer"], 60, 5)["body"] == "held"


def test_due_checkin_becomes_message_and_recurring_one_advances(store: Store, team, clock):
    now = clock.now()
    once, _ = store.add_checkin(team["project"], "operator", team["tester"], "once", now + 5)
    every, _ = store.add_checkin(
        team["project"], "operator", team["orchestrator"], "tick", now + 5, every_s=60
    )
    assert store.fire_due() == []
    clock.advance(5)
    fired = store.fire_due()
    assert {f.checkin_id for f in fired} == {once["id"], every["id"]}
    assert store.get_checkin(once["id"])["state"] == "fired"
    assert store.get_checkin(every["id"])["due_at"] == now + 65
    assert store.next_due_at() == now + 65


def test_event_log_is_append_only(store: Store, team: dict[str, int]):
    store.log_event("x", team["project"])
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.db.execute("DELETE FROM events")


def test_invalid_transition_is_a_conflict():
    with pytest.raises(Conflict):
        transition("delivered", Event.LEASE)


def _fire_in_process(path: str, start: float, rounds: int, out: multiprocessing.Queue) -> None:
    clock = FakeClock(start)
    store = Store(path, clock)
    fired = []
    for _ in range(rounds):
        fired += [f.checkin_id for f in store.fire_due(limit=7)]
        clock.advance(1)
    out.put(fired)


def test_two_processes_never_fire_the_same_checkin(tmp_path: Path, clock: FakeClock):
    store = Store(tmp_path / "shared.db", clock)
    project = store.upsert_project("demo", "/x")
    agent, _ = store.register_agent(project["id"], "orchestrator")
    start = clock.now()
    for i in range(200):
        store.add_checkin(project["id"], "operator", agent["id"], f"n{i}", start + i * 0.1)
    store.close()
    out: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_fire_in_process, args=(str(tmp_path / "shared.db"), start, 40, out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    all_fired = results[0] + results[1]
    assert len(all_fired) == 200
    assert len(set(all_fired)) == 200
    check = Store(tmp_path / "shared.db", clock)
    assert len(check.list_messages(limit=500)) == 200


def test_a_restarted_shim_takes_back_its_agents_leases_at_once(store: Store, team, clock):
    store.add_message(team["project"], "operator", team["developer"], "in flight")
    first = store.lease_next(team["developer"], 60, 5)
    assert store.lease_next(team["developer"], 60, 5) is None  # blocked by the old lease
    assert store.release_leases(team["developer"]) == 1
    again = store.lease_next(team["developer"], 60, 5)
    assert again["id"] == first["id"] and again["lease_id"] != first["lease_id"]
    assert store.release_leases(team["tester"]) == 0


def test_each_agent_gets_a_claude_session_id_that_a_new_token_keeps(store: Store):
    project = store.upsert_project("sessions", "/tmp/sessions")
    first, _ = store.register_agent(project["id"], "developer", "claude")
    other, _ = store.register_agent(project["id"], "tester", "claude")
    again, _ = store.register_agent(project["id"], "developer", "claude")

    assert len(first["session_id"]) == 36 and first["session_id"] != other["session_id"]
    assert again["session_id"] == first["session_id"]


def test_agents_from_before_session_ids_get_one_on_upgrade(tmp_path: Path, clock: FakeClock):
    old = Store(tmp_path / "a.db", clock)
    project = old.upsert_project("old", "/tmp/old")
    agent, _ = old.register_agent(project["id"], "developer")
    old.db.execute("UPDATE agents SET session_id = NULL")
    old.db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    old.close()

    upgraded = Store(tmp_path / "a.db", clock)

    assert len(upgraded.get_agent_by_id(agent["id"])["session_id"]) == 36


def test_leases_count_every_lease_and_an_operator_retry_does_not_reset_them(
    store: Store, team: dict[str, int]
):
    store.add_message(team["project"], "operator", team["developer"], "x")
    first = store.lease_next(team["developer"], 60, 1)
    assert first["leases"] == 1 and first["attempts"] == 1
    store.nack(team["developer"], first["id"], first["lease_id"], "no prompt", True, 1)
    assert store.get_message(first["id"])["state"] == "failed"  # its one attempt is used up

    store.set_message_state(first["id"], Event.RETRY, None)
    again = store.lease_next(team["developer"], 60, 1)
    assert again["attempts"] == 1 and again["leases"] == 2  # not a first lease: maybe typed


def test_messages_from_before_lease_counts_are_never_taken_for_first_leases(
    tmp_path: Path, clock: FakeClock
):
    old = Store(tmp_path / "a.db", clock)
    project = old.upsert_project("old", "/tmp/old")
    agent, _ = old.register_agent(project["id"], "developer")
    message, _ = old.add_message(project["id"], "operator", agent["id"], "from before")
    old.db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    old.db.execute("ALTER TABLE messages DROP COLUMN leases")
    old.close()

    upgraded = Store(tmp_path / "a.db", clock)

    lease = upgraded.lease_next(agent["id"], 60, 5)
    assert lease["id"] == message["id"] and lease["leases"] == 2


def test_the_usage_limit_reset_notice_comes_before_the_messages_held_meanwhile(
    store: Store, team: dict[str, int], clock: FakeClock
):
    """At the end of a pause the held messages are due at the same moment as agentvisor's "your
    usage limit has reset" check-in: the check-in is delivered first, even when the scheduler
    fires it a little after the pause ended."""
    store.update_agent(team["developer"], paused_until=clock.now() + 60, state="paused")
    store.add_checkin(team["project"], AGENTVISOR, team["developer"], "reset", clock.now() + 60)
    for body in ("held 1", "held 2"):
        store.add_message(team["project"], "operator", team["developer"], body)
    clock.advance(60.04)  # the pause is over; the scheduler has not fired the check-in yet
    assert store.lease_next(team["developer"], 60, 5) is None
    store.fire_due()
    got = []
    while (lease := store.lease_next(team["developer"], 60, 5)) is not None:
        got.append(lease["body"])
        store.ack(team["developer"], lease["id"], lease["lease_id"])
    assert got[0].endswith("reset") and got[1:] == ["held 1", "held 2"]


def test_match_builds_a_where_clause_of_the_values_asked_only() -> None:
    from agentvisor.store.database import match

    assert match({"a": None, "b": None}) == (None, [])
    assert match({"a": 1, "b": None, "c": "x"}) == ("a = ? AND c = ?", [1, "x"])
    assert match({"a": None}, ("(b = ? OR c = ?)", [2, 3])) == ("(b = ? OR c = ?)", [2, 3])
