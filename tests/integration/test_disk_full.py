"""A full disk: the store refuses new work with a clear error and keeps everything it had."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentvisor.errors import StorageFull
from agentvisor.store.database import Store
from tests.helpers import tiny_tmpfs


@pytest.fixture
def tiny_disk(short_tmp: Path):
    with tiny_tmpfs(short_tmp, "1m") as mount:
        yield mount


def test_full_disk_gives_a_clear_error_and_loses_nothing_accepted(tiny_disk: Path):
    store = Store(tiny_disk / "agentvisor.db")
    project = store.upsert_project("demo", "/tmp/demo")
    agent, _ = store.register_agent(project["id"], "developer")
    accepted = []
    with pytest.raises(StorageFull, match="disk holding the agentvisor state is full"):
        for i in range(10_000):
            message, _ = store.add_message(
                project["id"], "operator", agent["id"], f"message {i} " + "x" * 2000
            )
            accepted.append(message["id"])
    assert len(accepted) > 10
    store.close()
    # Room again: everything accepted before is there, and work goes on.
    for leftover in tiny_disk.glob("filler*"):
        leftover.unlink()
    reopened = Store(tiny_disk / "agentvisor.db")
    kept = {m["id"] for m in reopened.list_messages(limit=100_000)}
    assert set(accepted) <= kept
    lease = reopened.lease_next(agent["id"], 60, 5)
    assert lease["id"] == accepted[0]
