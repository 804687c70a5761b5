from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentvisor.core.recurrence import checkin_text, format_duration, plan_firing, unfireable


def test_one_shot_checkin_closes_after_firing():
    firing = plan_firing(due_at=100.0, every_s=None, now=100.5)
    assert firing.next_due_at is None
    assert firing.missed == 0


def test_recurring_checkin_keeps_cadence_without_drift():
    # fired 0.7 s late: the next one is still on the original grid, not 0.7 s later
    firing = plan_firing(due_at=1000.0, every_s=60.0, now=1000.7)
    assert firing.next_due_at == 1060.0
    assert firing.missed == 0


def test_checkin_missed_during_downtime_fires_once_and_resumes():
    # down for 5.5 periods: one firing now, says how late, and the grid continues
    firing = plan_firing(due_at=0.0, every_s=600.0, now=3300.0)
    assert firing.missed == 5
    assert firing.next_due_at == 3600.0
    text = checkin_text("stand-up", firing)
    assert "late by 55m" in text
    assert "5 earlier occurrences skipped" in text


def test_checkin_text_on_time_is_just_the_note():
    assert checkin_text("hi", plan_firing(10.0, None, 10.2)) == "Scheduled check-in: hi"


@given(due=st.floats(0, 1e9), every=st.floats(1, 1e6), late=st.floats(0, 1e7))
def test_next_occurrence_is_on_the_grid_and_after_now(due: float, every: float, late: float):
    now = due + late
    firing = plan_firing(due, every, now)
    assert firing.next_due_at is not None
    assert firing.next_due_at > now
    steps = (firing.next_due_at - due) / every
    assert abs(steps - round(steps)) < 1e-6 * max(1.0, steps)
    assert firing.next_due_at - now <= every * (1 + 1e-9) + 1e-6


def test_format_duration_reads_well():
    assert format_duration(5) == "5s"
    assert format_duration(125) == "2m 5s"
    assert format_duration(7260) == "2h 1m"
    assert format_duration(3 * 86400 + 3600) == "3d 1h"


@pytest.mark.parametrize(
    ("due_at", "every_s"),
    [
        (float("-inf"), None),
        (float("nan"), None),
        ("soon", None),
        (None, None),
        (b"\x00", None),
        (100.0, 1e-300),
        (100.0, -60.0),
        (100.0, float("inf")),
        (100.0, "60"),
    ],
)
def test_a_stored_check_in_that_cannot_fire_is_named(due_at, every_s):
    assert unfireable(due_at, every_s)


@pytest.mark.parametrize(("due_at", "every_s"), [(100.0, None), (100, 60.0), (0.0, 0)])
def test_a_sound_stored_check_in_can_fire(due_at, every_s):
    assert unfireable(due_at, every_s) is None
