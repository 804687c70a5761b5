"""Fair service under abuse (docs/limits.md): while one agent of project A opens 20,000
connections to the API (its sandbox's descriptor limit allows 20,000 here; the test prints how
many it opened) and floods requests as fast as it can, project B's check-ins still reach B's
pane in about the time they take without the attack (the 100 ms p99 target is a row of
`make bench ARGS=abuse`) and the operator's CLI answers. Real server, real Docker and tmux, the
demo agent. B's latency without the attack is measured first, so the figures say what the
machine itself gives."""

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
        quiet = arena.measure(seconds=15.0, connections=0, flooders=0, checkins=40)
        figures = arena.measure(seconds=30.0, connections=20_000, flooders=8, checkins=100)
    finally:
        arena.close()
    print(f"without the attack: B's p50 {quiet.p50_ms:.0f} ms, p99 {quiet.p99_ms:.0f} ms")
    for line in figures.lines():
        print(line)
    attacker = figures.attacker
    # 20,000 tried: the first `api_max_connections_per_sandbox` accepted, the rest wait in
    # the sandbox's own queue or are refused by its kernel (EAGAIN), the server unmoved.
    assert attacker["opened"] + sum(attacker["connect_errors"].values()) >= 20_000
    assert attacker["requests"] > 0
    assert figures.status_ms and figures.status_failures == 0, figures.lines()
    assert figures.rss_mb[2] - figures.rss_mb[0] < 100, figures.lines()
    assert figures.fds_peak < 1000, figures.lines()
    assert figures.log_growth_bytes < 100_000, figures.lines()
    # The target (p99 under 100 ms) is a row of `make bench ARGS=abuse`, with its verdict: a
    # timed test would measure the machine (2 CPUs here, the attacker's sandbox may take one).
    # What this test holds is that the flood cannot starve B: with one shared socket B's p99
    # was 28 s; now it stays within a few times what the machine gives B without the attack.
    bound = max(1_000.0, 4 * quiet.p99_ms)
    assert figures.p99_ms < bound, (
        f"B's p99 {figures.p99_ms:.0f} ms under the flood, over {bound:.0f} ms (without it: "
        f"{quiet.p99_ms:.0f} ms)"
    )
