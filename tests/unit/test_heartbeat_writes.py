"""A heartbeat that changes nothing writes nothing until the stored sign of life gets old: an
idle sandbox costs the server no write (and no fsync) every few seconds."""

from __future__ import annotations

from pathlib import Path

from agentvisor.clock import FakeClock
from agentvisor.config import Settings
from agentvisor.server.auth import Caller
from agentvisor.server.inbox_waiters import InboxWaiters
from agentvisor.server.metrics import Metrics
from agentvisor.server.service import Service
from agentvisor.store.database import Store


def test_an_unchanged_heartbeat_is_written_only_when_the_last_one_gets_old(tmp_path: Path):
    clock = FakeClock()
    settings = Settings(state_dir=tmp_path, heartbeat_timeout_s=30.0)
    store = Store(tmp_path / "db.sqlite", clock)
    service = Service(settings, store, None, InboxWaiters(), Metrics())
    project = store.upsert_project("demo", str(tmp_path))
    agent, _ = store.register_agent(project["id"], "developer")

    def beat(state: str = "idle", pane_hash: str = "a") -> float | None:
        caller = Caller("agent", store.get_agent_by_id(agent["id"]))
        service.heartbeat(caller, state, {"pane_hash": pane_hash})
        return store.get_agent_by_id(agent["id"])["last_seen_at"]

    first = beat()
    assert first == clock.now()
    clock.advance(5)
    assert beat() == first  # nothing changed, and the stored one is 5 s old
    clock.advance(5)
    assert beat() == clock.now()  # 10 s: a third of the health timeout, written again
    clock.advance(1)
    assert beat(state="working") == clock.now()  # a change is written at once
    clock.advance(1)
    assert beat(state="working", pane_hash="b") == clock.now()
    row = store.get_agent_by_id(agent["id"])
    assert (row["state"], row["pane_changed_at"]) == ("working", clock.now())
    store.close()
