from __future__ import annotations

from pathlib import Path

import pytest

from agentvisor.cli.queue import expand_specs
from agentvisor.core.spec import load_spec
from agentvisor.errors import InvalidInput
from agentvisor.server.project_queue import retry_spec_text
from agentvisor.server.watchdog import stall_of


def _agent(**fields):
    return {"state": "working", "paused_until": None, "pane_changed_at": 1000.0, **fields}


def test_agent_with_waiting_messages_and_still_pane_is_stalled():
    check = stall_of(_agent(), [{"created_at": 1000.0}], now=2000.0, stall_s=900)
    assert check.stalled and check.idle_s == 1000.0


def test_agent_without_undelivered_work_is_never_stalled():
    assert not stall_of(_agent(), [], now=5000.0, stall_s=900).stalled


def test_fresh_message_does_not_count_as_stalled_yet():
    assert not stall_of(_agent(), [{"created_at": 1990.0}], now=2000.0, stall_s=900).stalled


@pytest.mark.parametrize(
    "fields",
    [{"state": "paused"}, {"paused_until": 9999.0}, {"state": "failed"}, {"pane_changed_at": None}],
)
def test_paused_failed_or_unknown_agents_are_not_nudged(fields):
    assert not stall_of(_agent(**fields), [{"created_at": 0.0}], now=2000.0, stall_s=900).stalled


def test_retry_spec_keeps_the_original_and_adds_the_failure(tmp_path: Path):
    text = retry_spec_text(
        "# Thing\n\nBuild a thing that does useful work for people.\n",
        1,
        "timed out after 2h",
        {"developer": "line 1\n```\nline 2"},
        [{"kind": "agent.done", "data": {"summary": "half"}}],
    )
    assert text.startswith("# Thing\n\nBuild a thing")
    assert "## Previous attempt 1 failed" in text and "timed out after 2h" in text
    assert "#### developer" in text and "line 2" in text
    assert "agent.done" in text
    spec = tmp_path / "retry.md"
    spec.write_text(text, encoding="utf-8")
    assert load_spec(spec).title == "Thing"


def test_specs_expand_from_folders_and_globs(tmp_path: Path):
    for name in ("b.md", "a.md", "notes.txt"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    assert [p.name for p in expand_specs([str(tmp_path)])] == ["a.md", "b.md"]
    assert [p.name for p in expand_specs([str(tmp_path / "*.md")])] == ["a.md", "b.md"]
    with pytest.raises(InvalidInput, match="no spec files"):
        expand_specs([str(tmp_path / "*.rst")])


def test_the_watchdogs_own_revives_count_toward_max_restarts(tmp_path: Path):
    """`docker kill` leaves Docker's RestartCount at 0 when the watchdog starts the sandbox
    again: its own revives count, so a sandbox killed again and again is given up."""
    from agentvisor.clock import SystemClock
    from agentvisor.config import Settings
    from agentvisor.core.sandbox_status import SandboxInfo
    from agentvisor.server.inbox_waiters import InboxWaiters
    from agentvisor.server.metrics import Metrics
    from agentvisor.server.service import Service
    from agentvisor.server.watchdog import Watchdog
    from agentvisor.store.database import Store

    settings = Settings(state_dir=tmp_path, max_restarts=3)
    store = Store(tmp_path / "db.sqlite", SystemClock())
    project = store.upsert_project("demo", str(tmp_path))
    store.register_agent(project["id"], "orchestrator")
    store.register_agent(project["id"], "developer")
    info = SandboxInfo("demo", "developer", "agentvisor-demo-developer", "c1", "running", None,
                       None, 0, "img", None, "unless-stopped")  # fmt: skip

    class KilledEachPass:
        stopped: list[str] = []

        def revive_and_list(self, project=None):
            return [info], [info]

        def stop(self, project, role):
            self.stopped.append(role)

    backend = KilledEachPass()
    watchdog = Watchdog(Service(settings, store, None, InboxWaiters(), Metrics()), lambda: backend)
    for _ in range(2):
        watchdog.run_once()
    assert backend.stopped == []
    watchdog.run_once()  # the third revive: at max_restarts
    assert backend.stopped == ["developer"]
    assert store.get_agent(project["id"], "developer")["state"] == "failed"
    kinds = [e["kind"] for e in store.list_events(project["id"], limit=50)]
    assert kinds.count("sandbox.revived") == 3 and "sandbox.failed" in kinds
