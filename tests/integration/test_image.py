"""The sandbox image, run the way agentvisor runs it: locked down, as a uid it was not built for.

Needs the test image (`make image-test` builds agentvisor/sandbox:test; AGENTVISOR_TEST_IMAGE
overrides it). Without a Docker engine these tests skip, except in CI where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from agentvisor.errors import EngineUnavailable
from agentvisor.sandbox.docker_engine import docker_client
from agentvisor.sandbox.images import TEST_TAG
from tests.helpers import wait_until

pytestmark = pytest.mark.docker

IMAGE = os.environ.get("AGENTVISOR_TEST_IMAGE", TEST_TAG)
# Neither the build-time uid (1000) nor root: the image must cope with any --user.
RUN_UID, RUN_GID = 4242, 4343
WRAPPERS = ("agent", "schedule_with_note.sh", "send-claude-message.sh", "report-completion.sh")
MAX_TEST_IMAGE_MB = 400


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    try:
        return docker_client()
    except EngineUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Docker tests: {exc.message}")
        pytest.skip(exc.message)


@pytest.fixture(scope="module")
def image(client: docker.DockerClient) -> docker.models.images.Image:
    try:
        return client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"the image {IMAGE} is missing: run `make image-test` first")


@pytest.fixture(scope="module")
def sandbox(client: docker.DockerClient, image: docker.models.images.Image) -> Iterator[Container]:
    """One sandbox for the module, with the options agentvisor uses, and a fresh home volume."""
    run_id = uuid.uuid4().hex[:12]
    labels = {"agentvisor.test": "test_image", "agentvisor.test.run": run_id}
    home = client.volumes.create(f"agentvisor-test-home-{run_id}", labels=labels)
    container = client.containers.run(
        image.id,
        detach=True,
        init=True,
        user=f"{RUN_UID}:{RUN_GID}",
        read_only=True,
        tmpfs={
            "/tmp": "rw,nosuid,nodev",
            "/run": "rw,nosuid,nodev",
            "/run/agentvisor": f"rw,uid={RUN_UID},gid={RUN_GID},mode=0700",  # for a token
            # The agent's own clone, owned by the sandbox's uid as agentvisor makes it.
            "/workspace": f"rw,uid={RUN_UID},gid={RUN_GID},mode=0755",
            # A folder someone else owns, where git must not trust a repository.
            "/srv/foreign": "rw,uid=1000,gid=1000,mode=0777",
        },
        volumes={home.name: {"bind": "/home/agent", "mode": "rw"}},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        labels=labels,
        name=f"agentvisor-test-image-{run_id}",
    )
    try:
        yield container
    finally:
        container.remove(force=True)
        home.remove(force=True)


def run(container: Container, *cmd: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = container.exec_run(list(cmd), environment=env or {}, demux=False)
    return result.exit_code, (result.output or b"").decode(errors="replace").strip()


def ok(container: Container, *cmd: str) -> str:
    code, output = run(container, *cmd)
    assert code == 0, f"{cmd} exited {code}: {output}"
    return output


def program_state(container: Container, name: str) -> str:
    _, output = run(container, "supervisorctl", "status", name)
    return output


def test_supervisord_runs_tmux_under_the_init_and_logs_to_the_container(sandbox: Container):
    wait_until(
        lambda: "RUNNING" in program_state(sandbox, "tmux"),
        timeout_s=20,
        message="supervisord to report tmux RUNNING",
    )
    supervisord_pid = ok(sandbox, "pgrep", "-x", "supervisord")
    assert ok(sandbox, "ps", "-o", "ppid=", "-p", supervisord_pid) == "1"
    assert "tmux entered RUNNING state" in sandbox.logs().decode(errors="replace")
    # supervisorctl exits non-zero while a program is not RUNNING: only the listing matters here.
    _, programs = run(sandbox, "supervisorctl", "status")
    assert {line.split()[0] for line in programs.splitlines()} == {"agent_shim", "tmux"}


def test_tmux_server_answers_on_its_socket_with_a_long_history(sandbox: Container):
    socket = f"/tmp/tmux-{RUN_UID}/default"
    wait_until(
        lambda: run(sandbox, "tmux", "-S", socket, "show-options", "-g", "history-limit")[0] == 0,
        timeout_s=20,
        message=f"the tmux server on {socket}",
    )
    # /etc/tmux.conf sets 50000; agent_shim may raise it.
    limit = ok(sandbox, "tmux", "-S", socket, "show-options", "-gv", "history-limit")
    assert int(limit) >= 50000
    # TMUX_TMPDIR=/tmp: a client without -S finds the same server.
    assert ok(sandbox, "tmux", "show-options", "-gv", "history-limit") == limit
    # What Claude Code asks for at its first start; passthrough stays off (the operator's
    # terminal).
    assert ok(sandbox, "tmux", "show-options", "-gv", "focus-events") == "on"
    assert ok(sandbox, "tmux", "show-options", "-gv", "allow-passthrough") == "off"


def test_processes_run_unprivileged_as_the_given_uid(sandbox: Container):
    assert ok(sandbox, "id", "-u") == str(RUN_UID)
    assert ok(sandbox, "id", "-g") == str(RUN_GID)
    status = ok(sandbox, "cat", "/proc/1/status")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["CapBnd"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    code, output = run(sandbox, "touch", "/usr/local/probe")
    assert code != 0 and "Read-only file system" in output


def test_an_unknown_uid_is_named_agent_with_a_writable_home(sandbox: Container):
    assert ok(sandbox, "whoami") == "agent"
    assert ok(sandbox, "sh", "-c", "echo $HOME") == "/home/agent"
    assert ok(sandbox, "getent", "passwd", str(RUN_UID)).split(":")[5] == "/home/agent"
    ok(sandbox, "sh", "-c", "mkdir -p $HOME/.claude && echo hi > $HOME/.claude/probe")


def test_the_tools_are_installed(sandbox: Container):
    assert ok(sandbox, "tmux", "-V").startswith("tmux 3.")
    assert ok(sandbox, "git", "--version").startswith("git version 2.")
    assert ok(sandbox, "supervisord", "--version").startswith("4.")
    version = ok(sandbox, "python3", "-c", "import libtmux; print(libtmux.__version__)")
    assert tuple(int(p) for p in version.split(".")[:2]) >= (0, 37)
    assert ok(sandbox, "sh", "-c", "echo $LANG $PYTHONPATH") == "C.UTF-8 /opt/agentvisor"


def test_the_agent_shim_wrapper_scripts_are_on_path(sandbox: Container):
    for name in WRAPPERS:
        path = ok(sandbox, "sh", "-c", f"command -v {name}")
        assert path == f"/usr/local/bin/{name}"
        ok(sandbox, "test", "-x", path)


def test_git_works_in_the_agents_own_clone(sandbox: Container):
    ok(sandbox, "git", "init", "-q", "/workspace")
    ok(sandbox, "git", "-C", "/workspace", "commit", "-q", "--allow-empty", "-m", "probe")
    assert ok(sandbox, "git", "-C", "/workspace", "log", "--format=%an <%ae>") == (
        "agentvisor agent <agent@agentvisor.invalid>"
    )


def test_git_does_not_trust_a_repository_someone_else_owns(sandbox: Container):
    # The image's /etc/gitconfig has no `safe.directory=*` any more.
    ok(sandbox, "git", "init", "-q", "/srv/foreign")
    code, output = run(sandbox, "git", "-C", "/srv/foreign", "status")
    assert code != 0 and "dubious ownership" in output


def test_the_credential_helper_gives_the_token_to_the_channel_only(sandbox: Container):
    ok(sandbox, "sh", "-c", "echo tok-probe >/run/agentvisor/token")
    ask = "printf 'protocol=http\\nhost=%s\\n\\n' {} | GIT_TERMINAL_PROMPT=0 git credential fill"
    answer = ok(sandbox, "sh", "-c", ask.format("127.0.0.1:7399"))
    assert "username=agent" in answer.splitlines()
    assert "password=tok-probe" in answer.splitlines()
    code, output = run(sandbox, "sh", "-c", ask.format("example.com"))
    assert code != 0 and "tok-probe" not in output


def test_the_test_image_stays_lean(image: docker.models.images.Image):
    size_mb = image.attrs["Size"] / 2**20
    assert size_mb < MAX_TEST_IMAGE_MB, f"{IMAGE} is {size_mb:.0f} MB"
