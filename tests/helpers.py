"""Small helpers shared by the tests: waiting on conditions instead of sleeping, git and
throwaway repositories, Docker."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from agentvisor.client import ApiClient
    from tests.api_host import ApiHost

T = TypeVar("T")


# The unit tests' FakeClock starts here (tests/unit/conftest.py: `clock`, `store`).
CLOCK_T0 = 1_800_000_000.0


def name_suffix(path: Path) -> str:
    """A few letters and digits from a temp dir's random name: a project name made with it is
    new on this host and already valid (a temp name may hold "_", which names turn into "-")."""
    return "".join(c for c in path.name[-6:].lower() if c.isalnum())


def wait_until(
    predicate: Callable[[], T],
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    message: str = "condition",
) -> T:
    """Return the first truthy value of `predicate()`, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(interval_s)
        last = predicate()
    return last


def git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run git in `cwd` (trusting repositories handed to the sandbox uid); its stdout. The one
    git of the tests: a repository made by `make_repo` has an identity to commit with."""
    return subprocess.run(
        ["git", "-c", "safe.directory=*", *args],
        cwd=cwd,
        env=None if env is None else dict(env),
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def make_repo(
    path: Path,
    spec: str | None = None,
    branch: str = "main",
    *,
    files: Mapping[str, str] | None = None,
    message: str = "spec",
) -> Path:
    """A git repository at `path` (made, with its parents) whose one commit holds `spec.md`
    (`spec`) or `files` (name: text); a local identity, Test <test@example.com>, to commit
    with. Its resolved path."""
    contents = dict(files or {})
    if spec is not None:
        contents["spec.md"] = spec
    if not contents:
        raise ValueError("make_repo needs a spec or files to commit")
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", branch)
    git(path, "config", "user.name", "Test")
    git(path, "config", "user.email", "test@example.com")
    for name, text in contents.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text, encoding="utf-8")
    git(path, "add", "--", *contents)
    git(path, "commit", "-qm", message)
    return path.resolve()


TEAM_ROLES = ("orchestrator", "developer", "tester")


def team_clients(
    host: ApiHost, project: str = "demo", roles: tuple[str, ...] = TEAM_ROLES
) -> dict[str, ApiClient]:
    """Register `roles` in `project` (made if missing); a client with each one's token."""
    tokens = {role: host.register_agent(project, role) for role in roles}
    return {role: host.client_for(token) for role, token in tokens.items()}


def kill_tmux(socket_path: str) -> None:
    """End the tmux server on `socket_path` and every tmux process of it. `kill-server` alone
    can leave a server behind whose control client (`tmux -C`) lost its reader, a shim that
    was stopped: both are killed by their command line then."""
    subprocess.run(["tmux", "-S", socket_path, "kill-server"], capture_output=True, check=False)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and Path(argv[0].decode(errors="replace")).name == "tmux"
            and any(
                arg.decode(errors="replace") in (f"-S{socket_path}", socket_path) for arg in argv
            )
        ):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), 9)


def docker_answers() -> bool:
    import docker

    try:
        docker.from_env().ping()
        return True
    except Exception:  # any failure means: no engine to test against
        return False


def sandbox_test_image() -> str:
    """The sandbox image without agent CLIs that `make image-test` builds."""
    return os.environ.get("AGENTVISOR_TEST_IMAGE", "agentvisor/sandbox:test")


def remove_labelled(engine: object, label: str, value: str) -> None:
    """Remove the containers, volumes and networks a test labelled `label=value`."""
    selector = {"label": f"{label}={value}"}
    for container in engine.containers.list(all=True, filters=selector):  # type: ignore[attr-defined]
        container.remove(force=True)
    for volume in engine.volumes.list(filters=selector):  # type: ignore[attr-defined]
        volume.remove(force=True)
    for network in engine.networks.list(filters=selector):  # type: ignore[attr-defined]
        network.remove()


def scripted_up(
    settings: object, spec: Path, roles: tuple[str, ...], script: Path, image: str
) -> subprocess.CompletedProcess[str]:
    """`agentvisor up SPEC --roles ... --model scripted:SCRIPT --json`, as a user types it."""
    import sys

    state = str(settings.state_dir)  # type: ignore[attr-defined]
    command = [sys.executable, "-m", "agentvisor", "--state", state, "up", str(spec)]
    command += ["--roles", ",".join(roles), "--model", f"scripted:{script}", "--json"]
    return subprocess.run(
        command,
        env={**os.environ, "AGENTVISOR_IMAGE": image, "AGENTVISOR_MEMORY_MB": "1536"},
        capture_output=True,
        text=True,
        timeout=600,
    )


@contextlib.contextmanager
def tiny_tmpfs(base: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "1m") mounted at `base`/disk: a disk that fills up (root and
    mount(8) needed; the test says so otherwise)."""
    from tests.conftest import require

    mount = base / "disk"
    mount.mkdir()
    mounted = os.getuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    ).returncode == 0  # fmt: skip
    require(mounted, "root and mount(8) for a tiny tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
