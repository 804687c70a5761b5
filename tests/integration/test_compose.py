"""The supervisor under docker compose (compose/docker-compose.yml), with real Docker, git and
the demo agent: one server in its container serves a project brought up by the host CLI and one
started from its queue; a check-in is delivered; after `compose down` and `up` again the agents
and the schedule are back, and a check-in that fell due while it was down arrives once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agentvisor.client import ApiClient
from agentvisor.config import Settings, load_settings
from agentvisor.launch import project_name
from agentvisor.sandbox.sandboxes import SandboxBackend
from agentvisor.server import server_control
from tests.conftest import REPO, require
from tests.helpers import make_repo, wait_until

if TYPE_CHECKING:
    from docker.models.containers import Container

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

COMPOSE_FILE = REPO / "compose" / "docker-compose.yml"
SUPERVISOR_TAG = "agentvisor/supervisor:test"
SANDBOX_TAG = os.environ.get("AGENTVISOR_TEST_IMAGE", "agentvisor/sandbox:test")
ROLES = "orchestrator,developer"
SPEC = """# {title}

Build a small Python library that formats friendly greetings for a list of names, with unit
tests and a short README. Keep it dependency free.
"""


def compose_command() -> list[str] | None:
    """The `docker compose` plugin, else Debian's `docker-compose`."""
    for command in (["docker", "compose"], ["docker-compose"]):
        try:
            done = subprocess.run([*command, "version"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return command
    return None


def _engine() -> bool:
    import docker

    try:
        docker.from_env().ping()
        return True
    except Exception:
        return False


@dataclass
class ComposeProject:
    command: list[str]
    name: str
    env: dict[str, str]
    settings: Settings
    projects: Path
    clients: list[ApiClient] = field(default_factory=list)

    def run(self, *args: str) -> None:
        argv = [*self.command, "-p", self.name, "-f", str(COMPOSE_FILE), *args]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"

    def container(self) -> Container | None:
        import docker

        found = docker.from_env().containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.name}"}
        )
        return found[0] if found else None

    def up_and_healthy(self) -> None:
        self.run("up", "-d")

        def healthy() -> bool:
            container = self.container()
            if container is None:
                return False
            state = container.attrs["State"]
            assert state["Status"] != "exited", container.logs(tail=30).decode(errors="replace")
            return (state.get("Health") or {}).get("Status") == "healthy"

        wait_until(healthy, timeout_s=60, interval_s=0.5, message="the supervisor to be healthy")

    def client(self) -> ApiClient:
        client = ApiClient(self.settings)
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()


def _ensure_images() -> None:
    from agentvisor.sandbox import images, server_image

    if not images.image_exists(SANDBOX_TAG):
        images.build_sandbox_image(tag=SANDBOX_TAG, agent_clis="none")
    # Always: the layer cache makes it seconds, and the image must hold this checkout's code.
    server_image.build_server_image(tag=SUPERVISOR_TAG)


@pytest.fixture
def compose(short_tmp: Path) -> Iterator[ComposeProject]:
    require(_engine(), "a Docker engine")
    command = compose_command()
    require(command is not None, "docker compose (the plugin) or docker-compose")
    assert command is not None
    _ensure_images()
    root = short_tmp.resolve()  # labels and mounts need the same path on both sides
    state, projects = root / "state", root / "projects"
    state.mkdir()
    projects.mkdir()
    # Read by the server in its container and by the CLI on the host alike.
    (state / "config.toml").write_text(
        f'demo_image = "{SANDBOX_TAG}"\nagent = "demo"\n'
        "min_every_minutes = 0.05\nmemory_mb = 512\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVISOR_")}
    env.update(
        AGENTVISOR_STATE=str(state),
        AGENTVISOR_PROJECTS=str(projects),
        AGENTVISOR_SUPERVISOR_IMAGE=SUPERVISOR_TAG,
    )
    tag = re.sub(r"[^a-z0-9]", "", root.name.lower())[-6:]  # compose v1 drops other characters
    project = ComposeProject(command, f"avc{tag}", env, load_settings(state, env={}), projects)
    try:
        yield project
    finally:
        project.close_clients()
        container = project.container()
        logs = container.logs(tail=40).decode(errors="replace") if container else ""
        try:
            project.run("down", "-v", "--timeout", "10")
        finally:  # only this state dir's sandboxes, networks and home volumes
            backend = SandboxBackend(project.settings)
            for name in {s.project for s in backend.list()}:
                backend.remove(name, volumes=True)
            print(f"supervisor log tail:\n{logs}")


def _delivered(client: ApiClient, project: str, checkin_id: int) -> list[dict]:
    return [
        m
        for m in client.get("/v1/messages", project=project, limit=500)
        if m["checkin_id"] == checkin_id and m["state"] == "delivered"
    ]


def _sandboxes(backend: SandboxBackend, project: str) -> dict[str, tuple[str, str, float | None]]:
    """Each role's container id, status and start time: equal means not replaced or restarted."""
    return {s.role: (s.container_id, s.status, s.started_at) for s in backend.list(project)}


def test_compose_supervisor_serves_projects_and_brings_schedule_and_agents_back(
    compose: ComposeProject,
):
    started = time.monotonic()
    compose.up_and_healthy()
    settings = compose.settings
    tag = compose.name.removeprefix("avc")
    queued_repo = make_repo(compose.projects / f"calc-{tag}", SPEC.format(title=f"calc-{tag}"))
    direct_repo = make_repo(compose.projects / f"greet-{tag}", SPEC.format(title=f"greet-{tag}"))
    client = compose.client()

    # The queue: the server in the container makes the worktrees and starts the sandboxes.
    entry = client.post(
        "/v1/queue",
        {
            "spec_path": str(queued_repo / "spec.md"),
            "project_dir": str(queued_repo),
            "options": {"roles": ROLES.split(","), "agent": "demo"},
        },
    )

    # The host CLI: `up` finds the compose server on the socket and starts none of its own.
    up = subprocess.run(
        [sys.executable, "-m", "agentvisor", "--state", str(settings.state_dir), "up",
         str(direct_repo / "spec.md"), "--agent", "demo", "--roles", ROLES],
        cwd=REPO, env=compose.env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert up.returncode == 0, up.stdout + up.stderr
    assert not settings.log_path.exists(), "the CLI started a server of its own"
    project = project_name(direct_repo)
    assert {a["role"] for a in client.get("/v1/agents", project=project)} == set(ROLES.split(","))

    # A check-in is delivered into the developer's pane.
    first = client.post(
        "/v1/checkins",
        {"project": project, "to": "developer", "minutes": 0.01, "note": "first check-in"},
    )
    wait_until(lambda: _delivered(client, project, first["id"]), timeout_s=60, interval_s=0.2,
               message="the first check-in delivered")  # fmt: skip

    # The queued project ran to completion under the compose server.
    def queue_done() -> dict | None:
        row = client.get(f"/v1/queue/{entry['id']}")
        assert row["state"] != "failed", row
        return row if row["state"] == "done" else None

    wait_until(queue_done, timeout_s=150, interval_s=0.5, message="the queued project done")

    # A recurring check-in, and a one-shot one that falls due while the supervisor is down.
    routine = client.post(
        "/v1/checkins",
        {"project": project, "to": "orchestrator", "minutes": 0.05, "every_minutes": 0.1,
         "note": "routine check-in"},
    )  # fmt: skip
    wait_until(lambda: _delivered(client, project, routine["id"]), timeout_s=60, interval_s=0.2,
               message="the routine check-in delivered once")  # fmt: skip
    later = client.post(
        "/v1/checkins",
        {"project": project, "to": "developer", "minutes": 0.2, "note": "after the break"},
    )
    pending_before = {c["id"] for c in client.get("/v1/checkins", project=project, state="pending")}
    assert {routine["id"], later["id"]} <= pending_before
    backend = SandboxBackend(settings)
    sandboxes_before = _sandboxes(backend, project)
    compose.close_clients()

    compose.run("down")
    assert compose.container() is None
    assert not server_control.is_running(settings)
    # The sandboxes are not the compose project's: they run on, waiting for their server.
    assert {s.status for s in backend.list(project)} == {"running"}
    assert time.time() < later["due_at"], "the supervisor went down too slowly for this test"
    wait_until(lambda: time.time() > later["due_at"] + 1, timeout_s=30, interval_s=0.2,
               message="the check-in's due time to pass while down")  # fmt: skip
    back_at = time.time()

    compose.up_and_healthy()
    client = compose.client()
    # The agents come back: the same sandboxes, never restarted, adopted by their labels; their
    # shims reconnected to the new server through the mounted socket folder.
    assert _sandboxes(backend, project) == sandboxes_before
    wait_until(
        lambda: all(
            (a["last_seen_at"] or 0) > back_at for a in client.get("/v1/agents", project=project)
        ),
        timeout_s=60,
        interval_s=0.5,
        message="every agent's heartbeat at the new server",
    )
    # The schedule comes back: the check-in due during the downtime fires once, from the new
    # server (a note that it is late needs more than a minute of lateness)...
    delivered = wait_until(lambda: _delivered(client, project, later["id"]), timeout_s=60,
                           interval_s=0.2, message="the missed check-in after up")  # fmt: skip
    assert len(delivered) == 1
    assert delivered[0]["created_at"] >= back_at
    pane = backend.pane_history(project, "developer", lines=2000)
    assert pane.count(f"[{delivered[0]['marker']}]") == 1  # typed exactly once
    # ...and the recurring one is still pending and fires again.
    pending_after = {c["id"] for c in client.get("/v1/checkins", project=project, state="pending")}
    assert pending_before - {later["id"]} <= pending_after
    wait_until(
        lambda: any(m["created_at"] > back_at for m in _delivered(client, project, routine["id"])),
        timeout_s=60,
        interval_s=0.2,
        message="the routine check-in delivered after up",
    )
    print(f"compose scenario took {time.monotonic() - started:.1f} s")
