"""The project queue with real sandboxes and the demo agent: three specs run one after another;
the one that stalls times out, is retried with the failure's context appended to its spec, then
fails for good and runs the escalation hook."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentvisor.launch import project_name
from agentvisor.sandbox.sandboxes import SandboxBackend
from tests.conftest import ServerProcess, require
from tests.helpers import docker_answers, make_repo, sandbox_test_image, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SPEC = """# {title}

Build a small Python library that formats friendly greetings for a list of names, with unit
tests and a short README. {extra}
"""


def test_queue_runs_specs_in_turn_and_retries_a_failure_with_context(short_tmp: Path):
    require(docker_answers(), "a Docker engine")
    tag = short_tmp.name[-5:].lower()
    escalated = short_tmp / "escalated"
    server = ServerProcess(
        short_tmp / "state",
        env={
            "AGENTVISOR_DEMO_IMAGE": sandbox_test_image(),
            "AGENTVISOR_AGENT": "demo",
            "AGENTVISOR_PROJECT_TIMEOUT_MINUTES": "0.25",
            "AGENTVISOR_QUEUE_RETRIES": "1",
            "AGENTVISOR_MEMORY_MB": "512",
            "AGENTVISOR_ESCALATION_COMMAND": f"sh -c 'echo $AGENTVISOR_QUEUE_ID > {escalated}'",
        },
    ).start()
    repos = [
        make_repo(short_tmp / f"qa-{tag}", SPEC.format(title="qa", extra="")),
        make_repo(short_tmp / f"qb-{tag}", SPEC.format(title="qb", extra="DEMO:stall")),
        make_repo(short_tmp / f"qc-{tag}", SPEC.format(title="qc", extra="")),
    ]
    try:
        ids = [
            server.client.post(
                "/v1/queue",
                {
                    "spec_path": str(repo / "spec.md"),
                    "project_dir": str(repo),
                    "options": {"roles": ["orchestrator", "developer"], "agent": "demo"},
                },
            )["id"]
            for repo in repos
        ]

        def finished() -> list[dict] | None:
            rows = [server.client.get(f"/v1/queue/{i}") for i in ids]
            return rows if all(r["state"] in ("done", "failed") for r in rows) else None

        rows = wait_until(finished, timeout_s=240, interval_s=1, message="the queue to finish")
        assert [r["state"] for r in rows] == ["done", "failed", "done"], rows
        assert [r["attempts"] for r in rows] == [1, 2, 1]
        retry_spec = Path(rows[1]["current_spec"]).read_text(encoding="utf-8")
        assert "## Previous attempt 1 failed" in retry_spec
        assert "did not complete within" in retry_spec
        assert "DEMO:stall" in retry_spec  # the original spec comes first, unchanged
        assert escalated.read_text().strip() == str(ids[1])
        # one at a time: each started after the previous one finished
        assert rows[1]["started_at"] >= rows[0]["finished_at"]
        assert rows[2]["started_at"] >= rows[1]["finished_at"]
        events = [e["kind"] for e in server.client.get("/v1/events", limit=500)]
        assert "queue.retry" in events and "queue.escalated" in events
    finally:
        backend = SandboxBackend(server.settings)
        for repo in repos:
            backend.remove(project_name(repo), volumes=True)
        server.kill()
