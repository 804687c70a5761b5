"""Fair service under abuse (docs/limits.md): while one agent of project A opens 20,000
connections to the API socket (its sandbox's descriptor limit; the test prints how many it
got) and floods requests as fast as it can, project B's check-ins reach B's pane within 100 ms
at p99 and the operator's CLI answers. Real server, real Docker and tmux, the demo agent."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from benchmarks.abuse import Arena
from tests.conftest import require
from tests.helpers import docker_answers

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_an_agent_flooding_the_api_does_not_slow_another_projects_check_ins():
    require(docker_answers(), "a Docker engine")
    arena = Arena(Path(tempfile.mkdtemp(prefix="av-", dir="/tmp")))
    try:
        figures = arena.measure(seconds=30.0, connections=20_000, flooders=8, checkins=100)
    finally:
        arena.close()
    for line in figures.lines():
        print(line)
    attacker = figures.attacker
    assert attacker["opened"] >= 19_000  # 20,000 tried, as many as the sandbox's fd limit gave
    assert attacker["requests"] > 0
    assert figures.p99_ms < 100, figures.lines()
    assert figures.status_ms and figures.status_failures == 0, figures.lines()
    assert figures.rss_mb[2] - figures.rss_mb[0] < 100, figures.lines()
    assert figures.log_growth_bytes < 100_000, figures.lines()
