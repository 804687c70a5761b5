"""The real Claude Code (the user image) in a real sandbox reaches the model only through the
broker: ANTHROPIC_BASE_URL is the shim's relay to the host API, the stand-in key is the
agent's token, and the scripted model server runs on the host over HTTPS from a test CA that
only the broker trusts. No real key or login token is anywhere in the sandbox."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentvisor.config import Settings
from agentvisor.git.worktrees import ensure_worktree
from agentvisor.sandbox.claude import sandbox_extras
from agentvisor.sandbox.docker_engine import docker_client
from agentvisor.sandbox.images import build_sandbox_image
from agentvisor.sandbox.sandbox_tokens import write_token_file
from agentvisor.sandbox.sandbox_user import sandbox_owner
from agentvisor.sandbox.sandboxes import SandboxBackend, build_spec, gather_spec_inputs
from agentvisor.testing.model_server import ModelServer, last_user_text
from agentvisor.testing.tls import make_test_ca
from tests.conftest import ServerProcess, require
from tests.helpers import docker_answers, make_repo, remove_labelled, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = os.environ.get("AGENTVISOR_CLAUDE_TEST_IMAGE", "agentvisor/sandbox:claude-test")
TEST_LABEL = "agentvisor-test.run"
ROLE = "developer"
REAL_KEY = "sk-ant-api03-REAL-host-key-must-never-enter-a-sandbox-42"
OAUTH_ACCESS = "sk-ant-oat01-REAL-host-login-access-token-never-inside"
OAUTH_REFRESH = "sk-ant-ort01-REAL-host-login-refresh-token-never-inside"
# Run in the sandbox as its own user: every process's environment and command line, and every
# readable file outside /proc, /sys and /dev, searched for the secrets (given in hex, so that
# the search's own command line does not hold them).
SEARCH = r"""
import os, sys
secrets = [bytes.fromhex(s) for s in sys.argv[1:]]
hits = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        for name in ('environ', 'cmdline'):
            try:
                data = open(f'/proc/{pid}/{name}', 'rb').read()
            except OSError:
                continue
            hits += [f'/proc/{pid}/{name}' for s in secrets if s in data]
for root, dirs, files in os.walk('/'):
    if root == '/':
        dirs[:] = [d for d in dirs if d not in ('proc', 'sys', 'dev')]
    for name in files:
        path = os.path.join(root, name)
        try:
            if os.path.islink(path) or os.path.getsize(path) > 300_000_000:
                continue
            data = open(path, 'rb').read()
        except OSError:
            continue
        hits += [path for s in secrets if s in data]
print('\n'.join(hits) or 'CLEAN')
"""


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    require(docker_answers(), "a Docker engine")
    build_sandbox_image(tag=IMAGE, agent_clis="claude")
    engine = docker_client()
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="av-", dir="/tmp"))
    ca = make_test_ca(tmp / "ca")
    model = ModelServer(
        [
            {"when": "BROKER-ALPHA", "tool": "Bash", "command": "echo tool-ran"},
            {"when": "tool-ran", "text": "Done through the broker."},
        ],
        tls=ca.server_context(),
    ).start()
    home = tmp / "home"
    login = home / ".claude" / ".credentials.json"
    login.parent.mkdir(parents=True)
    login.write_text(
        json.dumps({"claudeAiOauth": {"accessToken": OAUTH_ACCESS, "refreshToken": OAUTH_REFRESH}})
    )
    login.chmod(0o600)  # the host's login, root's only
    server = ServerProcess(
        tmp / "state",
        env={
            "HOME": str(home),
            "ANTHROPIC_API_KEY": REAL_KEY,
            "AGENTVISOR_MODEL_UPSTREAM": model.url,
            "AGENTVISOR_MODEL_UPSTREAM_CA": str(ca.ca_cert),
            "AGENTVISOR_WATCHDOG_INTERVAL_S": "3600",
        },
    )
    project = f"cb{run}"
    try:
        server.start()
        settings = Settings(state_dir=tmp / "state", image=IMAGE, memory_mb=1536, tmpfs_mb=128)
        repo = make_repo(tmp / project, "# A spec\n")
        worktree = ensure_worktree(repo, ROLE, "main", owner=sandbox_owner(settings)).path
        server.ensure_project(project, str(repo))
        agent = server.client.post(
            "/v1/agents", {"project": project, "role": ROLE, "profile": "claude"}
        )
        token = write_token_file(settings, project, ROLE, agent["token"])
        # The host's own environment has the key: none of it reaches the sandbox.
        extras = sandbox_extras(
            settings,
            "claude",
            agent["session_id"],
            {"ANTHROPIC_API_KEY": REAL_KEY, "DISABLE_TELEMETRY": "1"},
        )
        spec = build_spec(
            gather_spec_inputs(
                settings,
                project=project,
                role=ROLE,
                worktree=worktree,
                repo_root=repo,
                token_file=token,
                profile="claude",
                image=IMAGE,
                extra_env={
                    **extras.env,
                    "AGENTVISOR_SHIM_HEARTBEAT_S": "0.5",
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                },
                credential_mounts=extras.mounts,
                extra_labels={TEST_LABEL: run},
            )
        )
        backend = SandboxBackend(settings)
        backend.ensure_running(spec)
        yield {
            "server": server,
            "model": model,
            "project": project,
            "token": agent["token"],
            "session_id": agent["session_id"],
            "container": engine.containers.get(spec.name),
            "backend": backend,
        }
    finally:
        remove_labelled(engine, TEST_LABEL, run)
        server.kill(signal.SIGTERM)
        model.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _agent(world: dict[str, Any]) -> dict[str, Any]:
    rows = world["server"].client.get("/v1/agents", project=world["project"])
    return next(a for a in rows if a["role"] == ROLE)


def _pane(world: dict[str, Any]) -> str:
    return str(world["backend"].pane_history(world["project"], ROLE, lines=5000))


def test_claude_code_works_through_the_broker_with_no_real_credential_inside(world):
    server, model = world["server"], world["model"]
    wait_until(
        lambda: _agent(world)["state"] == "idle",
        timeout_s=120,
        interval_s=0.2,
        message="Claude Code idle at its prompt",
    )
    pane = _pane(world)
    assert "❯" in pane
    for dialog in ("Do you want to use this API key?", "Select login method", "/login"):
        assert dialog not in pane
    sent = server.client.post(
        "/v1/messages",
        {"project": world["project"], "to": ROLE, "body": "BROKER-ALPHA: run the tool."},
    )
    (answered,) = wait_until(
        lambda: [
            r
            for r in model.conversation()
            if "tool-ran" in last_user_text(r["body"]) and r.get("usage")
        ],
        timeout_s=90,
        interval_s=0.2,
        message="the tool's result reached the model through the broker",
    )
    assert answered["headers"]["x-claude-code-session-id"] == world["session_id"]
    wait_until(lambda: "Done through the broker." in _pane(world), timeout_s=30)
    assert any(sent["marker"] in last_user_text(r["body"]) for r in model.conversation())

    # Every request reached the model with the host's key, never the stand-in.
    messages = [r for r in model.requests if r["path"].startswith("/v1/messages")]
    assert messages and {r["credential_sha256"] for r in model.requests} == {sha(REAL_KEY)}
    assert world["token"] not in json.dumps(model.requests)

    # The broker counted what the model reported.
    def counted() -> dict[str, Any] | None:
        rows = server.client.get("/v1/usage", project=world["project"])["agents"]
        row = next(r for r in rows if r["role"] == ROLE)
        reported = [r["usage"] for r in model.requests if r.get("usage")]
        return row if row["requests"] >= len(reported) and reported else None

    row = wait_until(counted, timeout_s=20, message="the broker's count")
    reported = [r["usage"] for r in model.requests if r.get("usage")]
    assert row["input_tokens"] == sum(u["input_tokens"] for u in reported)
    assert row["output_tokens"] == sum(u["output_tokens"] for u in reported)

    # Nothing in the sandbox holds the real key or the host's login tokens.
    started = time.monotonic()
    result = world["container"].exec_run(
        [
            "python3",
            "-c",
            SEARCH,
            *(s.encode().hex() for s in (REAL_KEY, OAUTH_ACCESS, OAUTH_REFRESH)),
        ]
    )
    print(f"\nsandbox searched in {time.monotonic() - started:.1f} s")
    assert result.exit_code == 0, result.output
    assert result.output.decode().strip() == "CLEAN"
