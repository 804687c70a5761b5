"""The shim's record of typed markers, its back-off and its state-change log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent_shim import journal as journal_module
from agent_shim.journal import DeliveryJournal
from agent_shim.shim import Backoff, StateLog


def test_recorded_markers_survive_a_restart(tmp_path: Path):
    path = tmp_path / "state" / "delivered"
    DeliveryJournal(path).record("av-1")
    again = DeliveryJournal(path)
    assert "av-1" in again
    assert "av-2" not in again


def test_the_journal_keeps_only_the_latest_markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(journal_module, "KEEP_MARKERS", 3)
    journal = DeliveryJournal(tmp_path / "delivered")
    for i in range(7):
        journal.record(f"av-{i}")
    reloaded = DeliveryJournal(tmp_path / "delivered")
    assert "av-6" in reloaded and "av-4" in reloaded
    assert "av-0" not in reloaded
    assert len((tmp_path / "delivered").read_text().splitlines()) <= 6


def test_backoff_doubles_from_100_ms_to_5_s_and_resets():
    backoff = Backoff()
    delays = [backoff.next() for _ in range(8)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == 0.1


def test_state_log_writes_one_line_per_change(caplog: pytest.LogCaptureFixture):
    states = StateLog()
    with caplog.at_level(logging.INFO, logger="agent_shim"):
        states.report("api", "ok", "up")  # the first "ok" is the normal start: silent
        for _ in range(5):
            states.report("api", "down", "down")
        states.report("api", "ok", "up")
    assert [r.message for r in caplog.records] == ["down", "up"]
