"""A demo agent in a real sandbox prints a usage-limit notice: the shim sees it, the server
pauses the agent until the named reset time plus the margin and holds its messages; when the
(injected) clock reaches that time, the held message and the "continue" check-in arrive once."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agentvisor import launch
from agentvisor.client import ApiClient
from agentvisor.config import load_settings
from agentvisor.sandbox.sandboxes import SandboxBackend
from agentvisor.server import server_control
from tests.conftest import require
from tests.helpers import docker_answers, make_repo, sandbox_test_image, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SPEC = """# Usage limits

Build a tiny library that adds two numbers, with a test, to show how a paused agent resumes.
"""
MARGIN_S = 60


def test_usage_limit_pauses_the_agent_until_the_named_time(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
):
    require(docker_answers(), "a Docker engine")
    state = short_tmp / "state"
    offset = state / "sock" / "clock-offset"  # the sandboxes see this folder
    offset.parent.mkdir(parents=True)
    offset.write_text("0")
    for key in [k for k in os.environ if k.startswith("AGENTVISOR_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AGENTVISOR_CLOCK_OFFSET_FILE", str(offset))
    monkeypatch.setenv("AGENTVISOR_USAGE_LIMIT_MARGIN_S", str(MARGIN_S))
    monkeypatch.setenv("AGENTVISOR_SCHEDULER_MAX_SLEEP_S", "0.5")  # the clock jumps
    monkeypatch.setenv("AGENTVISOR_DEMO_IMAGE", sandbox_test_image())
    settings = load_settings(state, memory_mb=512)
    repo = make_repo(short_tmp / f"limit-{short_tmp.name[-6:].lower()}", SPEC)
    report = launch.up(
        settings,
        launch.UpOptions(
            spec=repo / "spec.md", roles=("orchestrator", "developer"), agent="demo", wait_s=90
        ),
    )
    client = ApiClient(settings)
    try:
        project = report.project

        def developer() -> dict:
            return next(
                a for a in client.get("/v1/agents", project=project) if a["role"] == "developer"
            )

        # The notice names a time two hours ahead, in the sandbox's time zone (UTC).
        reset = (datetime.now().astimezone() + timedelta(hours=2)).replace(second=0, microsecond=0)
        notice = f"Claude usage limit reached. Your limit will reset at {reset:%H:%M} (UTC)."
        client.post(
            "/v1/messages",
            {"project": project, "to": "developer", "body": f"DEMO:usage-limit {notice}"},
        )
        paused = wait_until(
            lambda: developer()["paused_until"], timeout_s=60, message="the developer to be paused"
        )
        assert abs(paused - (reset.timestamp() + MARGIN_S)) < 2

        held = client.post(
            "/v1/messages", {"project": project, "to": "developer", "body": "held during the pause"}
        )
        time.sleep(2)  # a real pause: nothing may arrive while it lasts
        assert client.get("/v1/messages", project=project, limit=200)[0]["state"] in (
            "queued",
            "leased",
        )
        status = launch.status(settings, project)[1]
        assert next(r for r in status if r.role == "developer").paused_until == paused

        # Move both clocks (server and shim) past the reset time plus the margins.
        offset.write_text(str(paused - time.time() + 90))

        def delivered(kind: str, needle: str) -> dict | None:
            return next(
                (
                    m
                    for m in client.get("/v1/messages", project=project, limit=200)
                    if m["kind"] == kind and needle in m["body"] and m["state"] == "delivered"
                ),
                None,
            )

        first = wait_until(
            lambda: delivered("message", "held during the pause"),
            timeout_s=60,
            message="the held message",
        )
        resumed = wait_until(
            lambda: delivered("checkin", "usage limit has reset"),
            timeout_s=60,
            message="the continue check-in",
        )
        assert first["id"] == held["id"]
        pane = SandboxBackend(settings).pane_history(project, "developer", lines=2000)
        assert pane.count(f"[{first['marker']}]") == 1
        assert pane.count(f"[{resumed['marker']}]") == 1
    finally:
        client.close()
        SandboxBackend(settings).remove(report.project, volumes=True)
        server_control.stop_server(settings)
