"""Claude Code sandboxes: cold start (new home volume) to Claude Code ready at its input box, and
a message from the API to the model, with the real `claude` of the user image and the scripted
model server inside the sandbox. Needs Docker; builds the image (cached layers) first."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import docker

from agentvisor.config import Settings
from agentvisor.git.worktrees import ensure_worktree
from agentvisor.sandbox.claude import sandbox_extras
from agentvisor.sandbox.docker_engine import docker_client
from agentvisor.sandbox.images import build_sandbox_image
from agentvisor.sandbox.mounts import Mount
from agentvisor.sandbox.sandbox_tokens import write_token_file
from agentvisor.sandbox.sandbox_user import sandbox_owner
from agentvisor.sandbox.sandboxes import SandboxBackend, build_spec, gather_spec_inputs
from agentvisor.testing import model_server
from benchmarks.report import Result
from tests.helpers import remove_labelled

IMAGE = os.environ.get("AGENTVISOR_CLAUDE_TEST_IMAGE", "agentvisor/sandbox:claude-test")
RUNS = 3
PORT = 8399
MODEL_DIR = "/mnt/agentvisor-model"
LABEL = "agentvisor-bench.run"
T = TypeVar("T")

if TYPE_CHECKING:
    from tests.conftest import ServerProcess


def _wait(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(interval_s)
    return value


def cold_starts(runs: int = RUNS) -> list[dict[str, float]]:
    """Per run: seconds from create to container running, to the shim's first heartbeat, to
    Claude Code idle at its prompt, and from posting a message to the model receiving it."""
    from tests.conftest import ServerProcess

    build_sandbox_image(tag=IMAGE, agent_clis="claude")
    engine = docker_client()
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="avb-", dir="/tmp"))
    server = ServerProcess(tmp / "state", env={"AGENTVISOR_WATCHDOG_INTERVAL_S": "3600"})
    try:
        server.start()
        model = tmp / "model"
        model.mkdir(mode=0o755)
        shutil.copy(model_server.__file__, model / "model_server.py")
        (model / "script.json").write_text(json.dumps([{"when": "PING", "text": "pong"}]))
        return [_cold_start(server, engine, tmp, f"cb{run}{i}", run) for i in range(runs)]
    finally:
        remove_labelled(engine, LABEL, run)
        server.kill(signal.SIGTERM)
        shutil.rmtree(tmp, ignore_errors=True)


def _cold_start(
    server: ServerProcess, engine: docker.DockerClient, tmp: Path, project: str, run: str
) -> dict[str, float]:
    from tests.helpers import make_repo

    settings = Settings(
        state_dir=tmp / "state",
        image=IMAGE,
        memory_mb=1536,
        cpus=float(min(2, os.cpu_count() or 1)),
    )
    repo = make_repo(tmp / project, "# bench\n")
    worktree = ensure_worktree(repo, "developer", "main", owner=sandbox_owner(settings)).path
    server.ensure_project(project, str(repo))
    agent = server.client.post(
        "/v1/agents", {"project": project, "role": "developer", "profile": "claude"}
    )
    token = write_token_file(settings, project, "developer", agent["token"])
    # The model server runs in the sandbox: Claude Code is pointed at it directly, not at
    # the broker (the `broker` suite measures that).
    direct = {
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{PORT}",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    extras = sandbox_extras(settings, "claude", agent["session_id"], {})
    spec = build_spec(
        gather_spec_inputs(
            settings,
            project=project,
            role="developer",
            worktree=worktree,
            repo_root=repo,
            token_file=token,
            profile="claude",
            extra_env={**extras.env, **direct, "AGENTVISOR_SHIM_HEARTBEAT_S": "0.2"},
            credential_mounts=[*extras.mounts, Mount(tmp / "model", Path(MODEL_DIR), True)],
            extra_labels={LABEL: run},
        )
    )

    def agent_row() -> dict:
        return server.client.get("/v1/agents", project=project)[0]

    started = time.monotonic()
    SandboxBackend(settings).ensure_running(spec)
    running = time.monotonic() - started
    _wait(lambda: agent_row()["last_seen_at"], 60, "heartbeat")
    heartbeat = time.monotonic() - started
    _wait(lambda: agent_row()["state"] == "idle", 120, "ready prompt")
    ready = time.monotonic() - started

    container = engine.containers.get(spec.name)
    container.exec_run(
        ["python3", f"{MODEL_DIR}/model_server.py", "--port", str(PORT),
         "--script", f"{MODEL_DIR}/script.json", "--record", "/tmp/record.jsonl"],
        detach=True,
    )  # fmt: skip
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}/')"
    _wait(lambda: container.exec_run(["python3", "-c", probe]).exit_code == 0, 15, "model")
    sent = time.monotonic()
    server.client.post("/v1/messages", {"project": project, "to": "developer", "body": "PING"})

    def received() -> bool:
        output = container.exec_run(["cat", "/tmp/record.jsonl"]).output.decode()
        return any('"conversation": true' in line for line in output.splitlines())

    _wait(received, 60, "the message at the model", interval_s=0.1)
    return {
        "running_s": running,
        "heartbeat_s": heartbeat,
        "ready_s": ready,
        "message_to_model_s": time.monotonic() - sent,
    }


def run() -> list[Result]:
    figures = cold_starts()

    def median(key: str) -> float:
        return statistics.median(f[key] for f in figures)

    worst_ready = max(f["ready_s"] for f in figures)
    return [
        Result("claude sandbox create + start", f"{median('running_s'):.2f} s", ""),
        Result("claude sandbox to first heartbeat", f"{median('heartbeat_s'):.2f} s", ""),
        Result(
            f"claude cold start to ready (median of {len(figures)}, worst)",
            f"{median('ready_s'):.2f} s, {worst_ready:.2f} s",
            "< 10 s",
            worst_ready < 10,
        ),
        Result(
            "message posted to the model receiving it",
            f"{median('message_to_model_s'):.2f} s",
            "< 5 s",
            median("message_to_model_s") < 5,
        ),
    ]
