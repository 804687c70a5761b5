"""The real Claude Code (2.1.330, from the user image) in a real sandbox, talking to the scripted
model server on loopback inside the sandbox's own network namespace (a process in the sandbox).

One conversation, in order: the briefing reaches the model and its scripted `agent checkin`
runs in the sandbox; the check-in comes back into Claude Code; a message sent while the model
is slow waits for the turn's end (hook receipts in the event log); the sandbox is killed
mid-turn and resumes the same session; a usage-limit reply pauses the agent until its reset.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from agentvisor.config import Settings
from agentvisor.git.worktrees import ensure_worktree
from agentvisor.sandbox.claude import sandbox_extras
from agentvisor.sandbox.docker_engine import docker_client
from agentvisor.sandbox.images import build_sandbox_image
from agentvisor.sandbox.mounts import Mount
from agentvisor.sandbox.sandbox_spec import SandboxSpec
from agentvisor.sandbox.sandbox_tokens import write_token_file
from agentvisor.sandbox.sandbox_user import sandbox_owner
from agentvisor.sandbox.sandboxes import SandboxBackend, build_spec, gather_spec_inputs
from agentvisor.testing import model_server
from agentvisor.testing.model_server import gateway_token, last_user_text
from tests.conftest import ServerProcess, require
from tests.helpers import docker_answers, make_repo, remove_labelled, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = os.environ.get("AGENTVISOR_CLAUDE_TEST_IMAGE", "agentvisor/sandbox:claude-test")
TEST_LABEL = "agentvisor-test.run"
ROLE = "developer"
MODEL_DIR = "/mnt/agentvisor-model"  # the model server and its scripts, read-only
MODEL_PORT = 8399
RECORD = "/tmp/model-record.jsonl"  # in the sandbox: gone with a killed container, like it
MARGIN_S = 120.0  # the server's usage_limit_margin_s (its default)


def script(resets_at: int) -> list[dict[str, Any]]:
    """The model's side of the conversation; each step waits for the text it answers."""
    return [
        {"when": "BRIEFING-ALPHA", "tool": "Bash", "command": "agent checkin 0.02 'CHECKIN-BETA'"},
        {"when": "for you at", "text": "Scheduled a check-in."},  # `agent checkin`'s output
        {"when": "CHECKIN-BETA", "text": "Checked in."},
        {"when": "SLOW-GAMMA", "text": "That took a while.", "delay_s": 6},
        {"when": "QUICK-DELTA", "text": "Quick answer."},
        {"when": "KILL-EPSILON", "text": "Never sent: the sandbox dies first.", "delay_s": 60},
        {"when": "AFTER-ZETA", "text": "Resumed where we were."},
        {"when": "LIMIT-ETA", "usage_limit": True, "resets_at": resets_at},
    ]


@dataclass
class Claude:
    """One agent's sandbox running Claude Code, and what the test needs to drive it."""

    tmp: Path
    server: ServerProcess
    settings: Settings
    backend: SandboxBackend
    engine: docker.DockerClient
    spec: SandboxSpec
    resume_spec: SandboxSpec  # the same sandbox brought back by `resume`
    project: str
    session_id: str
    resets_at: int
    figures: dict[str, float] = field(default_factory=dict)

    def container(self) -> Container:
        return self.engine.containers.get(self.spec.name)

    def start_model_server(self) -> None:
        command = [
            "python3", f"{MODEL_DIR}/model_server.py", "--port", str(MODEL_PORT),
            "--script", f"{MODEL_DIR}/script.json", "--record", RECORD,
        ]  # fmt: skip
        self.container().exec_run(command, detach=True)
        probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{MODEL_PORT}/')"
        wait_until(
            lambda: self.container().exec_run(["python3", "-c", probe]).exit_code == 0,
            timeout_s=15,
            interval_s=0.1,
            message="the model server in the sandbox",
        )

    def model_requests(self) -> list[dict[str, Any]]:
        result = self.container().exec_run(["cat", RECORD])
        if result.exit_code != 0:
            return []
        return [json.loads(line) for line in result.output.decode().splitlines() if line]

    def turns(self) -> list[dict[str, Any]]:
        """The conversation's requests the model received (not title or quota side calls)."""
        return [r for r in self.model_requests() if r.get("conversation")]

    def turns_answering(self, text: str) -> list[dict[str, Any]]:
        return [r for r in self.turns() if text in last_user_text(r["body"])]

    def send(self, body: str, kind: str = "message") -> dict[str, Any]:
        return self.server.client.post(
            "/v1/messages", {"project": self.project, "to": ROLE, "body": body, "kind": kind}
        )

    def message(self, message_id: int) -> dict[str, Any]:
        rows = self.server.client.get("/v1/messages", project=self.project, limit=500)
        return next(m for m in rows if m["id"] == message_id)

    def delivered(self, message_id: int, timeout_s: float = 60) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            row = self.message(message_id)
            return row if row["state"] == "delivered" else None

        return wait_until(
            done, timeout_s=timeout_s, interval_s=0.1, message=f"message {message_id} delivered"
        )

    def agent(self) -> dict[str, Any]:
        rows = self.server.client.get("/v1/agents", project=self.project)
        return next(a for a in rows if a["role"] == ROLE)

    def events(self, kind: str) -> list[dict[str, Any]]:
        rows = self.server.client.get("/v1/events", project=self.project, limit=1000)
        return sorted((e for e in rows if e["kind"] == kind), key=lambda e: e["id"])

    def pane(self) -> str:
        return self.backend.pane_history(self.project, ROLE, lines=5000)

    def wait_idle(self, timeout_s: float = 60) -> None:
        """Until the shim reports Claude Code at its input box with no turn open."""
        wait_until(
            lambda: self.agent()["state"] == "idle",
            timeout_s=timeout_s,
            interval_s=0.1,
            message="Claude Code idle at its prompt\n" + self.diagnose(),
        )

    def diagnose(self) -> str:
        try:
            logs = self.container().logs(tail=40).decode(errors="replace")
            return f"--- pane ---\n{self.pane()[-3000:]}\n--- logs ---\n{logs}"
        except Exception as error:  # diagnostics only: never hide the real failure
            return f"(no diagnostics: {error})"


def _data(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    return json.loads(data) if isinstance(data, str) else (data or {})


@pytest.fixture(scope="module")
def claude() -> Iterator[Claude]:
    require(docker_answers(), "a Docker engine")
    # The user image with this checkout's shim; cached layers make it seconds after the first.
    build_sandbox_image(tag=IMAGE, agent_clis="claude")
    engine = docker_client()
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="av-", dir="/tmp"))
    server = ServerProcess(tmp / "state", env={"AGENTVISOR_WATCHDOG_INTERVAL_S": "3600"})
    project = f"cc{run}"
    try:
        server.start()
        settings = Settings(
            state_dir=tmp / "state",
            image=IMAGE,
            memory_mb=1536,
            cpus=float(min(2, os.cpu_count() or 1)),
            pids=512,
            tmpfs_mb=128,
        )
        repo = make_repo(tmp / project, "# A spec\n")
        worktree = ensure_worktree(repo, ROLE, "main", owner=sandbox_owner(settings)).path
        server.ensure_project(project, str(repo))
        agent = server.client.post(
            "/v1/agents", {"project": project, "role": ROLE, "profile": "claude"}
        )
        token = write_token_file(settings, project, ROLE, agent["token"])

        now = time.time()
        resets_at = int(now // 60) * 60 + 2 * 3600  # a whole minute: the notice shows minutes
        model = tmp / "model"
        model.mkdir()
        shutil.copy(model_server.__file__, model / "model_server.py")
        (model / "script.json").write_text(json.dumps(script(resets_at)))
        model.chmod(0o755)
        # The model server runs in the sandbox here, so the test points Claude Code at it
        # directly instead of at the broker (tests/integration/test_claude_broker.py covers
        # the broker). Beside the stand-in key the shim sets, the gateway token makes Claude
        # Code show a 429 as a subscriber's usage-limit notice.
        direct = {
            "ANTHROPIC_AUTH_TOKEN": gateway_token(),
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{MODEL_PORT}",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        extras = sandbox_extras(settings, "claude", agent["session_id"], {})

        def spec(resume: bool = False) -> SandboxSpec:
            return build_spec(
                gather_spec_inputs(
                    settings,
                    project=project,
                    role=ROLE,
                    worktree=worktree,
                    repo_root=repo,
                    token_file=token,
                    profile="claude",
                    image=IMAGE,
                    extra_env={**extras.env, **direct, "AGENTVISOR_SHIM_HEARTBEAT_S": "0.5"},
                    credential_mounts=[*extras.mounts, Mount(model, Path(MODEL_DIR), True)],
                    extra_labels={TEST_LABEL: run},
                    resume=resume,
                )
            )

        backend = SandboxBackend(settings)
        claude = Claude(
            tmp,
            server,
            settings,
            backend,
            engine,
            spec(),
            spec(resume=True),
            project,
            agent["session_id"],
            resets_at,
        )
        started = time.monotonic()
        backend.ensure_running(claude.spec)
        claude.figures["container_started_s"] = time.monotonic() - started
        claude.start_model_server()
        claude.wait_idle(timeout_s=90)
        claude.figures["cold_start_to_ready_s"] = time.monotonic() - started
        yield claude
    finally:
        remove_labelled(engine, TEST_LABEL, run)
        server.kill(signal.SIGTERM)
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_fresh_sandbox_opens_at_the_input_box_with_nothing_to_click(claude: Claude):
    pane = claude.pane()
    assert "❯" in pane
    for dialog in (
        "Yes, I trust this folder",
        "Do you want to use this API key?",
        "running in Bypass Permissions mode",
        "Unable to connect to Anthropic services",
    ):
        assert dialog not in pane
    assert not claude.turns()
    print(f"\nfigures: {claude.figures}")


def test_briefing_reaches_the_model_and_its_checkin_comes_back_into_claude(claude: Claude):
    briefing = claude.send(
        "You are the developer. BRIEFING-ALPHA\nSchedule a check-in for yourself.\nThen wait.",
        kind="briefing",
    )
    claude.delivered(briefing["id"])
    (turn,) = wait_until(
        lambda: claude.turns_answering("BRIEFING-ALPHA"), timeout_s=30, message="the briefing"
    )
    assert turn["headers"]["x-claude-code-session-id"] == claude.session_id
    assert f"[{briefing['marker']}]" in last_user_text(turn["body"])
    assert "Schedule a check-in for yourself.\nThen wait." in last_user_text(turn["body"])
    assert claude.pane().count(f"[{briefing['marker']}]") == 1  # three lines, one prompt

    # The scripted tool call ran `agent checkin` inside the sandbox: it is in the schedule.
    checkin = wait_until(
        lambda: next(
            (
                c
                for c in claude.server.client.get("/v1/checkins", project=claude.project)
                if c["note"] == "CHECKIN-BETA"
            ),
            None,
        ),
        timeout_s=30,
        message="the check-in made by Claude Code's Bash tool",
    )
    assert checkin["creator"] == ROLE
    # When it fires, its text reaches Claude Code's input and the model receives it.
    fired = wait_until(
        lambda: next(
            (
                m
                for m in claude.server.client.get("/v1/messages", project=claude.project)
                if m["checkin_id"] == checkin["id"] and m["state"] == "delivered"
            ),
            None,
        ),
        timeout_s=60,
        message="the check-in delivered",
    )
    wait_until(
        lambda: claude.turns_answering("CHECKIN-BETA"), timeout_s=30, message="the check-in turn"
    )
    assert claude.pane().count(f"[{fired['marker']}]") == 1


def test_a_message_sent_while_the_model_is_slow_waits_for_the_turn_then_goes_in_once(
    claude: Claude,
):
    claude.wait_idle()
    slow = claude.send("SLOW-GAMMA: think about it.")
    wait_until(lambda: claude.turns_answering("SLOW-GAMMA"), timeout_s=30, message="slow turn")
    quick = claude.send("QUICK-DELTA: and this?")

    claude.delivered(quick["id"], timeout_s=60)
    (quick_turn,) = wait_until(
        lambda: claude.turns_answering("QUICK-DELTA"), timeout_s=30, message="the quick turn"
    )
    (slow_turn,) = claude.turns_answering("SLOW-GAMMA")
    assert quick_turn["at"] >= slow_turn["at"] + 6  # after the slow answer, not during it
    assert claude.pane().count(f"[{quick['marker']}]") == 1
    logs = claude.container().logs().decode(errors="replace")
    assert f"[{quick['marker']}] submitted: the prompt hook confirmed it" in logs

    # The hooks' receipts are in the event log: the slow turn's Stop before the quick prompt.
    submitted = {_data(e).get("marker"): e for e in claude.events("agent.hook_prompt_submitted")}
    assert {slow["marker"], quick["marker"]} <= set(submitted)
    stops = [
        e for e in claude.events("agent.hook_stop") if e["id"] > submitted[slow["marker"]]["id"]
    ]
    assert stops and stops[0]["id"] < submitted[quick["marker"]]["id"]


def test_a_killed_sandbox_resumes_the_same_claude_session(claude: Claude):
    claude.wait_idle()
    before = claude.turns()
    dying = claude.send("KILL-EPSILON: start something long.")
    wait_until(lambda: claude.turns_answering("KILL-EPSILON"), timeout_s=30, message="the turn")
    claude.delivered(dying["id"])

    claude.container().kill()  # mid-turn: the model has not answered yet
    killed_at, started = time.time(), time.monotonic()
    claude.backend.ensure_running(claude.resume_spec)
    claude.start_model_server()
    wait_until(
        lambda: (claude.agent()["last_seen_at"] or 0) > killed_at,
        timeout_s=60,
        message="heartbeats from the resumed sandbox",
    )
    claude.wait_idle(timeout_s=90)
    claude.figures["resume_to_ready_s"] = time.monotonic() - started
    after = claude.send("AFTER-ZETA: are you back?")
    claude.delivered(after["id"])

    (turn,) = wait_until(
        lambda: claude.turns_answering("AFTER-ZETA"), timeout_s=30, message="the resumed turn"
    )
    assert turn["headers"]["x-claude-code-session-id"] == claude.session_id
    history = json.dumps(turn["body"]["messages"])
    for earlier in ("BRIEFING-ALPHA", "CHECKIN-BETA", "QUICK-DELTA", "That took a while."):
        assert earlier in history, f"{earlier} missing from the resumed conversation"
    assert all(r["headers"]["x-claude-code-session-id"] == claude.session_id for r in before)
    print(f"\nfigures: {claude.figures}")


def test_the_usage_limit_reply_pauses_the_agent_until_its_reset(claude: Claude):
    claude.wait_idle()
    claude.send("LIMIT-ETA: one more thing.")

    (event,) = wait_until(
        lambda: claude.events("agent.usage_limit"), timeout_s=60, message="the usage-limit event"
    )
    data = _data(event)
    assert "You've hit your 5-hour limit" in data["notice"]
    assert data["paused_until"] == claude.resets_at
    agent = claude.agent()
    assert agent["paused_until"] == pytest.approx(claude.resets_at + MARGIN_S, abs=1)
    # The StopFailure hook's event may come a moment after the pane's notice.
    failures = wait_until(
        lambda: claude.events("agent.hook_stop_failure"), timeout_s=15, message="StopFailure"
    )
    assert _data(failures[-1])["error"] == "rate_limit"
