"""A throwaway team for the drills: its own temporary state dir, server process, git repository,
project and demo sandboxes, all removed again by `close()`, and nothing of anyone else's touched.

Everything it makes is found by its state dir (a fresh temporary folder: the sandboxes' state-dir
label, the tokens, the socket) and by a project name no one else has (`<kind>-<random>`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from agentvisor.client import ApiClient
from agentvisor.config import Settings, load_settings
from agentvisor.core.delivery import MessageState
from agentvisor.drills.tally import StoreRow, cpu_seconds
from agentvisor.errors import AgentvisorError, SandboxError, ServerUnavailable
from agentvisor.git.git_run import run_git
from agentvisor.server import server_control

Progress = Callable[[str], None]
T = TypeVar("T")

FALLBACK_TEST_IMAGE = "agentvisor/sandbox:test"  # what `make image-test` builds
# The pattern of the shim's own process (supervisord starts it so), and not of the demo agent
# `python3 -m agent_shim.demo_agent`, which a looser pattern would kill with it.
SHIM_PATTERN = "^/usr/bin/python3 -m agent_shim$"
CLI_PATTERN = "agent_shim[.]demo_agent"
API_LIST_MAX = 500  # the most rows GET /v1/messages returns


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    """The first truthy value of `predicate()`, or SandboxError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SandboxError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def resolve_image(settings: Settings, wanted: str | None) -> str:
    """The demo image to run: `wanted`, else the settings' demo image, else the test image;
    a one-line error saying how to build it when none is there (or Docker does not answer)."""
    from agentvisor.sandbox import images

    candidates = [wanted] if wanted else [settings.demo_image, FALLBACK_TEST_IMAGE]
    for tag in candidates:
        if tag and images.image_exists(tag):
            return tag
    shown = " or ".join(t for t in candidates if t)
    raise SandboxError(
        f"the demo sandbox image {shown} is missing; build it with 'make image-test' (or "
        f"'agentvisor image build --agent-clis none --tag {candidates[0]}')"
    )


def process_cpu_s(pid: int, tid: int | None = None) -> float:
    """User and system CPU seconds a process (or one of its threads) has used so far."""
    where = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    return cpu_seconds(Path(where).read_text(encoding="ascii"), os.sysconf("SC_CLK_TCK"))


class ThrowawayServer:
    """An `agentvisor serve` process of our own on the throwaway state dir: started, killed
    with SIGKILL and started again, its CPU time read from /proc."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        package_root = str(Path(__file__).resolve().parents[2])
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVISOR_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.env = env

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout_s: float = 30.0) -> None:
        log_path = self.settings.state_dir / "server.log"
        with log_path.open("ab") as log:
            since = log.tell()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agentvisor", "--state", str(self.settings.state_dir),
                 "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches us, not it: we stop it ourselves
            )  # fmt: skip
        proc = self.proc
        deadline = time.monotonic() + timeout_s
        while not (
            server_control.answers_http(self.settings)
            and server_control.read_pid(self.settings) == proc.pid
        ):
            if proc.poll() is not None:
                tail = log_path.read_bytes()[since:].decode(errors="replace").strip()
                last = tail.splitlines()[-1] if tail else "no output"
                raise ServerUnavailable(f"the drill's server exited at start: {last}")
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"the drill's server did not answer within {timeout_s} s")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash would end it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def cpu_s(self) -> float:
        """CPU seconds the server process has used (all its threads)."""
        return 0.0 if self.proc is None else process_cpu_s(self.proc.pid)

    def cpu_percent_over(self, seconds: float) -> float:
        """The server's CPU over the next `seconds`, in % of one core."""
        before, began = self.cpu_s(), time.monotonic()
        time.sleep(seconds)
        return (self.cpu_s() - before) / (time.monotonic() - began) * 100


class Fleet:
    """A server and `size` demo sandboxes of one new project, in a temporary state dir."""

    def __init__(self, kind: str, size: int, image: str, progress: Progress) -> None:
        self.kind = kind
        self.image = image
        self.progress = progress
        self.base = Path(tempfile.mkdtemp(prefix=f"av-{kind}-", dir="/tmp"))  # short: sockets
        self.project = f"{kind}-{secrets.token_hex(3)}"
        self.roles = [f"agent-{i}" for i in range(size)]
        state = self.base / "state"
        state.mkdir()
        # The drill's own settings; the user's config and AGENTVISOR_* variables do not apply.
        (state / "config.toml").write_text(
            "\n".join(
                [
                    'agent = "demo"',
                    f'demo_image = "{image}"',
                    "memory_mb = 256",
                    # chaos: brings a killed container back soon; load: as users run it
                    f"watchdog_interval_s = {2.0 if kind == 'chaos' else 10.0}",
                    # The drill kills sandboxes on purpose; the watchdog must not give up on one.
                    "max_restarts = 1000000",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        self.settings = load_settings(state, env={})
        self.server = ThrowawayServer(self.settings)
        self._client: ApiClient | None = None
        self._backend: Any = None
        self.baseline_cpu_pct: float | None = None
        # Pane histories of the sandboxes' earlier lives (a killed container's tmux is gone).
        self.past_panes: dict[str, list[str]] = {role: [] for role in self.roles}

    # -- making it ---------------------------------------------------------------------------

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(self.settings, timeout_s=30)
        return self._client

    @property
    def backend(self) -> Any:
        if self._backend is None:
            from agentvisor.sandbox.sandboxes import SandboxBackend

            self._backend = SandboxBackend(self.settings)
        return self._backend

    def start(self, baseline_s: float = 0.0) -> float:
        """Server, repository, project, agents and sandboxes; seconds until every shim has
        sent its first heartbeat. With `baseline_s`, the server's idle CPU with no sandbox is
        measured that long first (`baseline_cpu_pct`)."""
        from agentvisor.git.worktrees import ensure_worktree
        from agentvisor.sandbox.sandbox_tokens import write_token_file
        from agentvisor.sandbox.sandbox_user import sandbox_owner
        from agentvisor.sandbox.sandboxes import build_spec, gather_spec_inputs

        self.progress(f"starting a throwaway server in {self.settings.state_dir}")
        self.server.start()
        repo = self._make_repo()
        self.client.post("/v1/projects", {"name": self.project, "path": str(repo)})
        self.client.post(f"/v1/projects/{self.project}/state", {"state": "running"})
        if baseline_s > 0:
            self.progress(f"measuring the idle server with no sandbox for {baseline_s:g} s")
            self.baseline_cpu_pct = self.server.cpu_percent_over(baseline_s)
        specs = []
        for role in self.roles:
            token = self.client.post(
                "/v1/agents", {"project": self.project, "role": role, "profile": "demo"}
            )["token"]
            worktree = ensure_worktree(repo, role, "main", owner=sandbox_owner(self.settings))
            specs.append(
                build_spec(
                    gather_spec_inputs(
                        self.settings,
                        project=self.project,
                        role=role,
                        worktree=worktree.path,
                        repo_root=repo,
                        token_file=write_token_file(self.settings, self.project, role, token),
                        profile="demo",
                        image=self.image,
                        extra_labels={"agentvisor-drill": self.kind},
                    )
                )
            )
        self.progress(f"starting {len(specs)} demo sandboxes of project {self.project}")
        begin = time.time()
        self.backend.start_many(specs)
        wait_for(lambda: self.all_seen_since(begin), 180, "every shim's first heartbeat", 0.2)
        return time.time() - begin

    def _make_repo(self) -> Path:
        repo = self.base / self.project
        repo.mkdir()
        identity = ["user.name=agentvisor drill", "user.email=drill@localhost"]
        run_git(repo, "init", "-q", "-b", "main")
        (repo / "spec.md").write_text(
            f"# {self.kind} drill\n\nA throwaway project of `agentvisor {self.kind}`.\n",
            encoding="utf-8",
        )
        run_git(repo, "add", "spec.md")
        run_git(repo, "commit", "-qm", "spec", config=identity)
        return repo

    def all_seen_since(self, since: float) -> bool:
        agents = self.client.get("/v1/agents", project=self.project)
        seen = {a["role"] for a in agents if (a["last_seen_at"] or 0) >= since}
        return seen >= set(self.roles)

    # -- the witnesses -----------------------------------------------------------------------

    def pane(self, role: str) -> str:
        """The whole history of the agent's pane in this life of its sandbox."""
        return str(self.backend.pane_history(self.project, role, lines=0))

    def panes(self) -> dict[str, list[str]]:
        """Every capture of every pane: its earlier lives' and its current one."""
        return {role: [*self.past_panes[role], self.pane(role)] for role in self.roles}

    def store_rows(self) -> dict[int, StoreRow]:
        """Every message of the project by id, as the store has it (listed per recipient and
        state: the API lists at most 500 at a time)."""
        rows: dict[int, StoreRow] = {}
        for role in self.roles:
            for state in MessageState:
                listed = self.client.get(
                    "/v1/messages",
                    project=self.project,
                    recipient=role,
                    state=state.value,
                    limit=API_LIST_MAX,
                )
                if len(listed) >= API_LIST_MAX:
                    raise AgentvisorError(
                        f"{role} has {API_LIST_MAX} or more {state.value} messages, more than "
                        "the API lists; run with fewer messages or more sandboxes"
                    )
                for row in listed:
                    rows[row["id"]] = StoreRow(
                        row["state"], row["created_at"], row.get("delivered_at")
                    )
        return rows

    def pending(self) -> int:
        """Messages of the project still queued or leased (at most two pages' worth)."""
        return sum(
            len(self.client.get("/v1/messages", project=self.project, state=s, limit=50))
            for s in (MessageState.QUEUED.value, MessageState.LEASED.value)
        )

    # -- the kills ---------------------------------------------------------------------------

    def container(self, role: str) -> Any:
        from agentvisor.sandbox.sandbox_spec import container_name

        return self.backend.client.containers.get(container_name(self.project, role))

    def running(self, role: str) -> bool:
        import docker.errors

        try:
            return bool(self.container(role).status == "running")
        except docker.errors.NotFound:
            return False

    def wait_running(self, roles: list[str] | None = None, timeout_s: float = 90.0) -> None:
        for role in roles or self.roles:
            wait_for(partial(self.running, role), timeout_s, f"the sandbox of {role} to run")

    def pkill(self, role: str, pattern: str, sig: str = "KILL", timeout_s: float = 30.0) -> None:
        """Signal the processes matching `pattern` in the sandbox, waiting (while supervisord
        or the shim brings them back) until there is one to signal."""

        def signalled() -> bool:
            if not self.running(role):
                return False
            code, _ = self.container(role).exec_run(["pkill", f"-{sig}", "-f", pattern])
            return bool(code == 0)

        wait_for(signalled, timeout_s, f"a process matching {pattern!r} in {role}'s sandbox", 0.2)

    def kill_shim(self, role: str) -> None:
        self.pkill(role, SHIM_PATTERN)  # supervisord starts it again

    def kill_cli(self, role: str) -> None:
        # The shim starts it again, after a back-off when it keeps dying (up to a minute).
        self.pkill(role, CLI_PATTERN, timeout_s=90.0)

    def kill_container(self, role: str) -> None:
        """`docker kill` the sandbox (the watchdog starts it again). Its pane history dies with
        its tmux server, so it is captured first, with the shim stopped (SIGSTOP) so that
        nothing is typed between the capture and the kill."""
        self.wait_running([role])
        self.pkill(role, SHIM_PATTERN, sig="STOP")
        self.past_panes[role].append(self.pane(role))
        self.container(role).kill()

    def kill_server(self) -> None:
        self.server.kill()
        self.server.start()
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- removing it -------------------------------------------------------------------------

    def close(self) -> list[str]:
        """Remove everything the fleet made; what could not be removed, as sentences."""
        problems: list[str] = []
        if self._client is not None:
            self._client.close()
        for what, step in (
            ("the sandboxes", self._remove_sandboxes),
            ("the server", self.server.stop),
        ):
            try:
                step()
            except (AgentvisorError, OSError) as exc:
                problems.append(f"could not remove {what}: {exc}")
        shutil.rmtree(self.base, ignore_errors=True)
        if self.base.exists():
            problems.append(f"could not remove {self.base}")
        return problems

    def _remove_sandboxes(self) -> None:
        if self._backend is None and not self.settings.state_dir.exists():
            return
        self.backend.remove(self.project, volumes=True)
        for info in self.backend.list():  # anything else of this state dir
            self.backend.remove(info.project, volumes=True)

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.progress("interrupted: removing the throwaway team")
        for problem in self.close():
            self.progress(problem)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Any:
    """SIGTERM ends a drill as Ctrl-C does: through the clean-up."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
