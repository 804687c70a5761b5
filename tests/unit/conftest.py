"""Fixtures the unit tests share: a FakeClock at CLOCK_T0 and a real store on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentvisor.clock import FakeClock
from agentvisor.store.database import Store
from tests.helpers import CLOCK_T0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(CLOCK_T0)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    store = Store(tmp_path / "agentvisor.db", clock)
    yield store
    store.close()
