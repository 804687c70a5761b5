"""Shared fixtures: real server processes on throwaway state directories, and the rule that
Docker and tmux tests fail in CI rather than skip."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentvisor.client import ApiClient
from agentvisor.config import Settings, load_settings
from tests.api_host import ApiHost
from tests.helpers import wait_until
from tests.in_process_api import InProcessServer, in_process_server

REPO = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))


def require(condition: bool, what: str) -> None:
    """Skip locally, fail in CI: CI must run every Docker and tmux test."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI (run 'make setup')", pytrace=False)
    pytest.skip(f"{what} is not available")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir: Unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="av-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class ServerProcess(ApiHost):
    """A real `agentvisor serve` process on its own state directory."""

    def __init__(self, state_dir: Path, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        # This checkout's code, whatever the venv's editable install points at (a worktree).
        path = os.pathsep.join((str(REPO / "supervisor"), str(REPO)))
        self.env = {**os.environ, "PYTHONPATH": path, **(env or {})}
        self.env.pop("AGENTVISOR_STATE", None)
        super().__init__()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> Settings:
        return load_settings(self.state_dir, env={})

    @property
    def socket_path(self) -> Path:
        return self.settings.socket_path

    @property
    def operator_token(self) -> str:
        return self.settings.operator_token_path.read_text(encoding="utf-8").strip()

    def start(self) -> ServerProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "test-server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentvisor", "--state", str(self.state_dir), "serve"],
            env=self.env,
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
        log.close()
        atexit.register(self.kill, signal.SIGKILL)  # never outlive the test run

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError("server exited: " + self.log_tail())
            probe = ApiClient(self.settings, token="")
            try:
                probe.get("/v1/health")
                return True
            except Exception:
                return False
            finally:
                probe.close()

        wait_until(up, timeout_s=20, message="the server to answer")
        return self

    def log_tail(self) -> str:
        path = self.state_dir / "test-server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        self.close_clients()

    def restart(self) -> ServerProcess:
        self.kill(signal.SIGTERM)
        return self.start()

    def new_client(self, token: str | None) -> ApiClient:
        return ApiClient(self.settings, token=token)


@pytest.fixture
def server(short_tmp: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(short_tmp / "state").start()
    yield proc
    proc.kill(signal.SIGTERM)


@pytest.fixture
def api(short_tmp: Path) -> Iterator[InProcessServer]:
    """The real app on a throwaway state directory, served in this process (no socket)."""
    with in_process_server(short_tmp / "state") as served:
        yield served


CLAUDE_TEST_IMAGE = os.environ.get("AGENTVISOR_CLAUDE_TEST_IMAGE", "agentvisor/sandbox:claude-test")


@pytest.fixture
def dry_run_host(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A host with no model key and no Claude login (the server `up` starts inherits this
    environment) and the Claude test image: what `up --model scripted` needs, nothing more."""
    from agentvisor.sandbox.images import build_sandbox_image
    from tests.helpers import docker_answers

    require(docker_answers(), "a Docker engine")
    build_sandbox_image(tag=CLAUDE_TEST_IMAGE, agent_clis="claude")
    home = short_tmp / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in [n for n in os.environ if n.startswith(("AGENTVISOR_", "ANTHROPIC_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AGENTVISOR_WATCHDOG_INTERVAL_S", "3600")
    return load_settings(short_tmp / "state", env={}, image=CLAUDE_TEST_IMAGE, memory_mb=1536)


def _leftover_sandboxes() -> list[tuple[str, str]]:
    """Containers and volumes of test state dirs (/tmp/av-*) whose dir is gone: a test that
    did not clean up after itself."""
    found: list[tuple[str, str]] = []
    for kind, ident in (("container", "{{.ID}}"), ("volume", "{{.Name}}")):
        listed = subprocess.run(
            ["docker", kind, "ls", "--filter", "label=agentvisor.managed=1",
             "--format", ident + ' {{.Label "agentvisor.state_dir"}}']
            + (["-a"] if kind == "container" else []),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        for line in listed.stdout.splitlines():
            name, _, state_dir = line.partition(" ")
            if state_dir.startswith("/tmp/av-") and not Path(state_dir).exists():
                found.append((kind, name))
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove what tests left behind and name it, so that a leak is seen and fixed (the
    controller only, after every worker is done)."""
    if hasattr(session.config, "workerinput") or shutil.which("docker") is None:
        return
    try:
        leftovers = _leftover_sandboxes()
        for kind, ident in leftovers:
            subprocess.run(["docker", kind, "rm", "-f", ident], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return
    if leftovers:
        names = ", ".join(ident[:24] for _, ident in leftovers)
        print(f"\nconftest: tests left {len(leftovers)} containers/volumes; removed: {names}",
              file=sys.stderr)  # fmt: skip
