"""`up` for a team of 5 with the image cached: seconds until every briefing is verified in its
pane (the demo agent; real Docker, real git)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from agentvisor import launch
from agentvisor.config import load_settings
from agentvisor.sandbox.sandboxes import SandboxBackend
from agentvisor.server import server_control
from benchmarks.report import Result

SPEC = """# Bench web app

Build a small web application with a REST API backend, a React frontend, login, a dashboard
page, tests in the browser and a deployment with docker.
"""


def time_up(team: tuple[str, ...]) -> float:
    with tempfile.TemporaryDirectory(prefix="avb-", dir="/tmp") as tmp:
        base = Path(tmp)
        repo = base / f"upbench-{base.name[-5:].lower()}"
        repo.mkdir()
        (repo / "spec.md").write_text(SPEC, encoding="utf-8")
        for args in (["init", "-q", "-b", "main"], ["add", "spec.md"], ["commit", "-qm", "s"]):
            subprocess.run(
                ["git", "-c", "user.name=b", "-c", "user.email=b@b", *args], cwd=repo, check=True
            )
        env = {
            "AGENTVISOR_DEMO_IMAGE": os.environ.get(
                "AGENTVISOR_TEST_IMAGE", "agentvisor/sandbox:test"
            )
        }
        settings = load_settings(base / "state", env=env, memory_mb=512)
        server_control.start_detached(settings)  # a running server, as on a machine in use
        try:
            begin = time.perf_counter()
            report = launch.up(
                settings,
                launch.UpOptions(spec=repo / "spec.md", roles=team, agent="demo", wait_s=120),
            )
            elapsed = time.perf_counter() - begin
            assert {a.briefing for a in report.agents} == {"delivered"}, report.agents
            return elapsed
        finally:
            SandboxBackend(settings).remove(repo.name, volumes=True)
            server_control.stop_server(settings)


def run() -> list[Result]:
    team = ("orchestrator", "project-manager", "developer", "tester", "test-runner")
    elapsed = time_up(team)
    return [
        Result("up to every briefing verified, team of 5", f"{elapsed:.1f} s", "< 5 s", elapsed < 5)
    ]
