"""Sandboxes on the real Docker engine, against a real server and real git repositories.

Two projects: `a` with three agents, `b` with one. Everything is labelled with this run's id and
removed by that label afterwards. Needs the test image (`make image-test`); without Docker these
tests skip, except in CI where they fail.
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

import docker
import docker.errors
import pytest
from docker.models.containers import Container
from typer.testing import CliRunner

from agentvisor import cli
from agentvisor.config import Settings
from agentvisor.errors import EngineUnavailable, SandboxError
from agentvisor.git.git_run import run_git
from agentvisor.git.refs import git_common_dir
from agentvisor.git.worktrees import ensure_worktree, worktrees_dir
from agentvisor.sandbox.docker_engine import docker_client
from agentvisor.sandbox.images import TEST_TAG
from agentvisor.sandbox.sandbox_spec import SandboxSpec, ownership_labels
from agentvisor.sandbox.sandbox_tokens import write_token_file
from agentvisor.sandbox.sandbox_user import sandbox_owner
from agentvisor.sandbox.sandboxes import SandboxBackend, build_spec, gather_spec_inputs
from tests.conftest import ServerProcess, require
from tests.helpers import make_repo, remove_labelled, wait_until

pytestmark = pytest.mark.docker

IMAGE = os.environ.get("AGENTVISOR_TEST_IMAGE", TEST_TAG)
TEST_LABEL = "agentvisor-test.run"
ROLES_A = ("developer", "tester", "reviewer")
ROLES_B = ("developer",)
EROFS = 30


@dataclass
class Team:
    run: str
    tmp: Path
    server: ServerProcess
    settings: Settings
    backend: SandboxBackend
    engine: docker.DockerClient
    repos: dict[str, Path]
    specs: dict[tuple[str, str], SandboxSpec]
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def a(self) -> str:
        return f"t{self.run}a"

    @property
    def b(self) -> str:
        return f"t{self.run}b"

    def container(self, project: str, role: str) -> Container:
        return self.engine.containers.get(self.specs[project, role].name)

    def agent(self, project: str, role: str) -> dict:
        rows = self.server.client.get("/v1/agents", project=project)
        return next(r for r in rows if r["role"] == role)


def worktree_list(output: str) -> list[str]:
    """`git worktree list --porcelain` without the HEAD lines, which commits move."""
    return [line for line in output.splitlines() if line and not line.startswith("HEAD ")]


def sh(container: Container, script: str, user: str | None = None) -> tuple[int, str]:
    result = container.exec_run(["sh", "-c", script], user=user or "", demux=False)
    return result.exit_code, (result.output or b"").decode(errors="replace").strip()


def py(container: Container, code: str) -> dict:
    """Run python3 in the sandbox; the code prints one JSON object."""
    result = container.exec_run(["python3", "-c", code])
    output = (result.output or b"").decode(errors="replace")
    assert result.exit_code == 0, output
    return json.loads(output.strip().splitlines()[-1])


def cleanup(engine: docker.DockerClient, run: str) -> None:
    remove_labelled(engine, TEST_LABEL, run)


@pytest.fixture(scope="module")
def engine() -> docker.DockerClient:
    try:
        client = docker_client()
    except EngineUnavailable as exc:
        require(False, f"the Docker engine ({exc.message})")
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        require(False, f"the image {IMAGE} (make image-test)")
    return client


@pytest.fixture(scope="module")
def team(engine: docker.DockerClient) -> Iterator[Team]:
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="av-", dir="/tmp"))
    # The server's watchdog would revive killed sandboxes too; here the test calls revive().
    server = ServerProcess(
        tmp / "state",
        env={"AGENTVISOR_WATCHDOG_INTERVAL_S": "3600", "AGENTVISOR_WATCHDOG_EVENTS": "0"},
    )
    try:
        server.start()
        settings = Settings(
            state_dir=tmp / "state", image=IMAGE, memory_mb=384, cpus=0.5, pids=128, tmpfs_mb=32
        )
        team = Team(run, tmp, server, settings, SandboxBackend(settings), engine, {}, {})
        for project, roles in ((team.a, ROLES_A), (team.b, ROLES_B)):
            repo = make_repo(tmp / project, files={"README.md": "hello\n"})
            team.repos[project] = repo
            server.ensure_project(project, str(repo))  # the git channel serves this one
            owner = sandbox_owner(settings)  # root host: the sandbox user owns its clone
            worktrees = [ensure_worktree(repo, role, "main", owner=owner).path for role in roles]
            for role, worktree in zip(roles, worktrees, strict=True):
                token = write_token_file(
                    settings, project, role, server.register_agent(project, role)
                )
                team.specs[project, role] = build_spec(
                    gather_spec_inputs(
                        settings,
                        project=project,
                        role=role,
                        worktree=worktree,
                        repo_root=repo,
                        token_file=token,
                        profile="demo",
                        extra_labels={TEST_LABEL: run},
                    )
                )
        started = time.monotonic()
        team.backend.start_many(team.specs.values())
        team.figures["start_many_s"] = time.monotonic() - started
        for project, role in team.specs:
            wait_until(
                lambda p=project, r=role: team.agent(p, r)["last_seen_at"],
                timeout_s=60,
                message=f"the first heartbeat of {project}/{role}",
            )
        team.figures["all_heartbeats_s"] = time.monotonic() - started
        yield team
    finally:
        cleanup(engine, run)
        server.kill(signal.SIGTERM)
        shutil.rmtree(tmp, ignore_errors=True)


# --- started, locked down ----------------------------------------------------------------------


def test_sandboxes_start_concurrently_and_their_shims_send_heartbeats(team: Team):
    infos = team.backend.list(team.a)

    assert [(i.role, i.status) for i in infos] == sorted((r, "running") for r in ROLES_A)
    assert all(i.restart_policy == "unless-stopped" and i.image == IMAGE for i in infos)
    assert team.figures["all_heartbeats_s"] < 30
    print(f"\nfigures: {team.figures}")


def test_sandbox_runs_locked_down_with_the_settings_limits(team: Team):
    for role in ROLES_A:
        container = team.container(team.a, role)
        host = container.attrs["HostConfig"]
        assert container.attrs["Config"]["User"] == "{}:{}".format(*team.settings.sandbox_ids())
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert host["Privileged"] is False
        assert host["ReadonlyRootfs"] is True
        assert host["Init"] is True
        assert host["Memory"] == 384 * 2**20
        assert host["NanoCpus"] == 500_000_000
        assert host["PidsLimit"] == 128
        assert host["NetworkMode"] == "none"
        assert host["RestartPolicy"]["Name"] == "unless-stopped"
        assert not any("docker.sock" in m["Source"] for m in container.attrs["Mounts"])

    inside = py(
        team.container(team.a, "developer"),
        """
import json, os, socket
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
def writable(path):
    try:
        open(path, "w").close()
        return True
    except OSError as error:
        return error.errno
def engine(path):
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
def cgroup(path):
    try:
        return open(path).read().strip()
    except OSError:
        return None
print(json.dumps({
    "uid": os.getuid(),
    "cap_eff": status["CapEff"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "usr": writable("/usr/local/bin/evil"),
    "etc": writable("/etc/evil"),
    "tmp": writable("/tmp/fine"),
    "engines": [engine(p) for p in ("/var/run/docker.sock", "/run/docker.sock")],
    "engine_files": [os.path.exists(p) for p in ("/var/run/docker.sock", "/run/docker.sock")],
    "memory": cgroup("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    "pids": cgroup("/sys/fs/cgroup/pids/pids.max"),
}))
""",
    )
    assert inside["uid"] == team.settings.sandbox_ids()[0] != 0
    assert inside["cap_eff"] == "0000000000000000"
    assert inside["no_new_privs"] == "1"
    assert inside["usr"] == EROFS and inside["etc"] == EROFS
    assert inside["tmp"] is True
    assert inside["engines"] == [False, False] and inside["engine_files"] == [False, False]
    if inside["memory"] is not None:  # cgroup v1 as here; v2 names the files differently
        assert int(inside["memory"]) == 384 * 2**20
        assert inside["pids"] == "128"


def test_files_made_in_the_worktree_belong_to_the_sandbox_user_on_the_host(team: Team):
    container = team.container(team.a, "developer")
    code, output = sh(container, "echo inside > /workspace/made-inside.txt")
    assert code == 0, output

    made = team.specs[team.a, "developer"].mounts[0].source  # the clone's host path
    stat = (Path(made) / "made-inside.txt").stat()
    assert (stat.st_uid, stat.st_gid) == team.settings.sandbox_ids()
    (Path(made) / "made-inside.txt").unlink()


def test_commit_inside_reaches_the_agents_branch_through_the_channel_and_nothing_else(
    team: Team,
):
    repo = team.repos[team.a]
    refs_before = run_git(repo, "for-each-ref").stdout
    container = team.container(team.a, "tester")

    code, output = sh(
        container,
        "cd /workspace && echo test > from-inside.txt && git add from-inside.txt "
        "&& git commit -qm 'from inside the sandbox' && git rev-parse HEAD",
    )
    assert code == 0, output

    head = output.splitlines()[-1]
    wait_until(
        lambda: run_git(repo, "rev-parse", "agent/tester").stdout.strip() == head,
        timeout_s=15,
        message="the shim publishing the commit to agent/tester",
    )
    assert run_git(repo, "log", "-1", "--format=%s|%an", "agent/tester").stdout.strip() == (
        f"from inside the sandbox|tester ({team.a})"
    )
    changed = set(run_git(repo, "for-each-ref").stdout.splitlines()) - set(refs_before.splitlines())
    assert [line.split()[-1] for line in changed] == ["refs/heads/agent/tester"]


def test_nothing_of_the_projects_git_dir_is_in_the_sandbox(team: Team):
    repo = team.repos[team.a]
    common = git_common_dir(repo)
    other = worktrees_dir(repo) / "reviewer"
    result = py(
        team.container(team.a, "developer"),
        f"""
import json, os
mounts = open("/proc/self/mountinfo").read()
print(json.dumps({{
    "project_git_visible": os.path.exists("{common}"),
    "project_git_in_mounts": "{common}" in mounts or " {repo}/" in mounts or " {repo} " in mounts,
    "own_git_dir": os.path.isdir("/workspace/.git") and not os.path.islink("/workspace/.git"),
    "other_worktree_visible": os.path.exists("{other}"),
}}))
""",
    )
    assert result == {
        "project_git_visible": False,
        "project_git_in_mounts": False,
        "own_git_dir": True,
        "other_worktree_visible": False,
    }


def test_agents_cannot_reach_each_other_at_all(team: Team):
    """No interface but loopback, no DNS: not an agent of the same project, not one of another
    (they talk through messages)."""
    target = team.container(team.a, "developer")
    target.reload()
    assert target.attrs["HostConfig"]["NetworkMode"] == "none"
    assert not any(n.get("IPAddress") for n in target.attrs["NetworkSettings"]["Networks"].values())
    listener = (
        "import socket\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('0.0.0.0', 8765)); s.listen()\n"
        "while True: s.accept()[0].close()\n"
    )
    target.exec_run(["python3", "-c", listener], detach=True)
    probe = (
        "import json, os, socket, sys\n"
        "out = {'interfaces': sorted(os.listdir('/sys/class/net'))}\n"
        "for name, host in (('by_name', 'developer'), ('by_container', sys.argv[1]),\n"
        "                   ('loopback', '127.0.0.1')):\n"
        "    try:\n"
        "        socket.create_connection((host, 8765), timeout=2).close(); out[name] = 'open'\n"
        "    except OSError as error:\n"
        "        out[name] = type(error).__name__\n"
        "print(json.dumps(out))\n"
    )

    def reach(container: Container) -> dict:
        result = container.exec_run(["python3", "-c", probe, str(target.name)])
        return json.loads(result.output.decode())

    # The listener works: its own sandbox reaches it on loopback.
    wait_until(lambda: reach(target)["loopback"] == "open", timeout_s=10,
               message="the listener to answer in its own sandbox")  # fmt: skip
    for other in (team.container(team.a, "tester"), team.container(team.b, "developer")):
        seen = reach(other)
        assert seen["interfaces"] == ["lo"]
        assert seen["by_name"] == seen["by_container"] == "gaierror"  # no DNS at all
        assert seen["loopback"] == "ConnectionRefusedError"  # its own loopback, not target's


# --- the agents at work ------------------------------------------------------------------------


def test_a_message_sent_through_the_api_shows_in_each_agents_pane(team: Team):
    bodies = {role: f"hello {role}, run {team.run}" for role in ROLES_A}
    for role, body in bodies.items():
        team.server.client.post("/v1/messages", {"project": team.a, "to": role, "body": body})
    for role, body in bodies.items():
        wait_until(
            lambda r=role, b=body: b in team.backend.pane_history(team.a, r, 200),
            timeout_s=30,
            interval_s=0.2,
            message=f"the message in {role}'s pane",
        )
    # The shim acks once it has seen the text in the pane: just after it showed.
    wait_until(
        lambda: (
            {m["state"] for m in team.server.client.get("/v1/messages", project=team.a)}
            == {"delivered"}
        ),
        timeout_s=15,
        message="the messages to be acked",
    )


def test_ps_shows_health_and_usage_and_logs_shows_the_pane(team: Team):
    runner = CliRunner()
    state = ["--state", str(team.settings.state_dir)]
    result = runner.invoke(cli.app, [*state, "ps", "--project", team.a, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["role"], r["status"], r["health"]) for r in rows] == sorted(
        (role, "running", "healthy") for role in ROLES_A
    )
    assert all(r["memory_mb"] > 0 and r["cpu_percent"] is not None for r in rows)
    team.figures["idle_memory_mb"] = max(r["memory_mb"] for r in rows)

    table = runner.invoke(cli.app, [*state, "ps"])
    assert table.exit_code == 0, table.output
    assert all(role in table.output for role in ROLES_A) and "healthy" in table.output

    # Only one project has a reviewer: no --project needed.
    result = runner.invoke(cli.app, [*state, "logs", "reviewer"])
    assert result.exit_code == 0, result.output
    assert f"hello reviewer, run {team.run}" in result.output
    assert "demo>" in result.output
    # --lines N prints the last N lines (no padding rows), 0 the whole scrollback.
    last_two = runner.invoke(cli.app, [*state, "logs", "reviewer", "--lines", "2"])
    assert last_two.exit_code == 0, last_two.output
    assert len(last_two.output.splitlines()) == 2 and "demo>" in last_two.output.splitlines()[-1]
    whole = runner.invoke(cli.app, [*state, "logs", "reviewer", "--lines", "0"])
    assert f"hello reviewer, run {team.run}" in whole.output
    assert whole.output.endswith(last_two.output)
    ambiguous = runner.invoke(cli.app, [*state, "logs", "developer"])
    assert isinstance(ambiguous.exception, SandboxError)
    assert "pass --project" in ambiguous.exception.message

    argv = team.backend.exec_tty_argv(team.a, "reviewer")
    assert argv[1:] == ["exec", "-it", "-u", "{}:{}".format(*team.settings.sandbox_ids()),
                        "-w", "/workspace", team.specs[team.a, "reviewer"].name,
                        "tmux", "attach", "-t", "agent"]  # fmt: skip
    print(f"\nfigures: {team.figures}")


def test_idle_sandbox_memory_and_start_to_heartbeat_time(team: Team, engine: docker.DockerClient):
    """Figures for the report: one more sandbox, timed from create to its first heartbeat."""
    spec = team.specs[team.b, "developer"]
    team.backend.remove(team.b, "developer")
    before = time.time()
    started = time.monotonic()
    team.backend.ensure_running(spec)
    created = time.monotonic()
    wait_until(
        lambda: (team.agent(team.b, "developer")["last_seen_at"] or 0) > before,
        timeout_s=30,
        interval_s=0.01,
        message="the new sandbox's first heartbeat",
    )
    team.figures["create_start_s"] = created - started
    team.figures["create_to_heartbeat_s"] = time.monotonic() - started
    usage = team.backend.stats(team.a)
    team.figures["idle_memory_mb"] = max(s.memory_mb or 0 for s in usage.values())
    top = team.container(team.a, "reviewer").top(ps_args="-o pid,rss,comm")
    rss = top["Titles"].index("RSS")
    team.figures["idle_rss_sum_mb"] = sum(int(p[rss]) for p in top["Processes"]) / 1024
    print(f"\nfigures: {team.figures}")
    assert team.figures["create_to_heartbeat_s"] < 20


# --- crashes, adoption, other state dirs -------------------------------------------------------


def test_killed_sandbox_comes_back_and_a_new_backend_adopts_it(team: Team):
    spec = team.specs[team.a, "reviewer"]
    container = team.container(team.a, "reviewer")
    first_id = container.id

    # A crash (the init dies): Docker's restart policy brings it back.
    os.kill(container.attrs["State"]["Pid"], signal.SIGKILL)
    wait_until(
        lambda: (
            (c := team.container(team.a, "reviewer")).attrs["RestartCount"] == 1
            and c.status == "running"
        ),
        timeout_s=20,
        message="Docker to restart the crashed sandbox",
    )

    # `docker kill`: Docker takes it for a wish to keep it down; the watchdog does not.
    container.reload()
    container.kill()
    assert team.container(team.a, "reviewer").status == "exited"
    killed_at = time.time()
    fresh = SandboxBackend(team.settings)  # as after a restart of the supervisor
    revived = fresh.revive()  # what the server's watchdog does on each pass
    assert [i.role for i in revived] == ["reviewer"]
    assert team.container(team.a, "reviewer").status == "running"

    assert [i.role for i in fresh.list(team.a)] == sorted(ROLES_A)
    assert fresh.ensure_running(spec).container_id == first_id  # adopted, not replaced
    wait_until(
        lambda: (team.agent(team.a, "reviewer")["last_seen_at"] or 0) > killed_at,
        timeout_s=30,
        message="heartbeats from the revived sandbox",
    )


def test_another_state_dir_neither_lists_nor_adopts_these_sandboxes(team: Team):
    other = Settings(**{**vars(team.settings), "state_dir": team.tmp / "other"})
    (other.state_dir / "sock").mkdir(parents=True)
    project, role = team.a, "developer"
    token = write_token_file(other, project, role, "ava_other")
    spec = build_spec(
        gather_spec_inputs(
            other,
            project=project,
            role=role,
            worktree=Path(team.specs[project, role].mounts[0].source),
            repo_root=team.repos[project],
            token_file=token,
            profile="demo",
            extra_labels={TEST_LABEL: team.run},
        )
    )
    backend = SandboxBackend(other)

    assert backend.list() == []
    with pytest.raises(SandboxError, match="belongs to the state dir"):
        backend.ensure_running(spec)
    assert backend.stop(project) == [] and backend.remove(project, volumes=True) == []
    assert team.container(project, role).status == "running"


def test_stale_sandbox_is_replaced_and_keeps_its_home(team: Team):
    project, role = team.b, "developer"
    old = team.container(project, role)
    code, output = sh(old, "echo kept > $HOME/note")
    assert code == 0, output
    spec = team.specs[project, role]
    changed = build_spec(
        gather_spec_inputs(
            team.settings,
            project=project,
            role=role,
            worktree=Path(spec.mounts[0].source),
            repo_root=team.repos[project],
            token_file=Path(spec.mounts[-2].source),
            profile="demo",
            extra_labels={TEST_LABEL: team.run},
            extra_env={"PROJECT_FLAVOUR": "changed"},
        )
    )

    info = team.backend.ensure_running(changed)

    assert info.container_id != old.id and info.status == "running"
    new = team.container(project, role)
    assert sh(new, "cat $HOME/note; echo $PROJECT_FLAVOUR") == (0, "kept\nchanged")
    assert team.backend.ensure_running(changed).container_id == info.container_id


def test_stop_keeps_sandboxes_down_and_remove_cleans_up(team: Team):
    project = team.b
    assert team.backend.stop(project) == [team.specs[project, "developer"].name]
    info = team.backend.get(project, "developer")
    assert (info.status, info.restart_policy) == ("exited", "no")
    assert team.backend.revive(project) == []
    with pytest.raises(SandboxError, match="is exited"):
        team.backend.pane_history(project, "developer")

    assert team.backend.start(project, "developer").status == "running"
    # The bridge an agentvisor before 0.3 made for the project goes with it.
    team.engine.networks.create(
        f"agentvisor-{project}",
        labels={**ownership_labels(team.settings, project), TEST_LABEL: team.run},
    )
    removed = team.backend.remove(project, volumes=True)

    assert set(removed) == {
        f"agentvisor-{project}-developer",
        f"agentvisor-home-{project}-developer",
        f"agentvisor-{project}",
    }
    assert team.backend.list(project) == []
    assert team.engine.networks.list(names=[f"agentvisor-{project}"]) == []
    assert team.engine.volumes.list(filters={"name": f"agentvisor-home-{project}"}) == []
