"""`agentvisor doctor`: is everything agentvisor needs in order? Each check is one line with a
verdict and, when it fails, what to do."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from agentvisor.config import Settings

LOW_DISK_MB = 1024
_docker_cache: tuple[float, str | None] = (0.0, None)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def docker_problem(timeout_s: float = 3.0, cache_s: float = 5.0) -> str | None:
    """None when the Docker engine answers, else why not. Cached a few seconds (health is
    polled)."""
    global _docker_cache
    checked_at, problem = _docker_cache
    if time.monotonic() - checked_at < cache_s:
        return problem
    import docker

    try:
        client = docker.from_env(timeout=int(max(1, timeout_s)))
        client.ping()
        client.close()
        problem = None
    except Exception as exc:  # any failure means the engine cannot be used; say which
        problem = f"{type(exc).__name__}: {exc}"[:300]
    _docker_cache = (time.monotonic(), problem)
    return problem


def disk_free_mb(settings: Settings) -> int:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(settings.state_dir).free // (1024 * 1024)


def run_checks(settings: Settings) -> list[Check]:
    from agentvisor.client import ApiClient
    from agentvisor.sandbox import images
    from agentvisor.server import server_control

    checks: list[Check] = []

    def add(name: str, test: Callable[[], tuple[bool, str]]) -> None:
        try:
            ok, detail = test()
        except Exception as exc:  # a check that crashes is a failed check, not a traceback
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        checks.append(Check(name, ok, detail))

    def tools() -> tuple[bool, str]:
        missing = [t for t in ("git", "tmux") if shutil.which(t) is None]
        return not missing, (
            "git and tmux found"
            if not missing
            else f"missing {', '.join(missing)}: run 'make setup'"
        )

    def engine() -> tuple[bool, str]:
        problem = docker_problem(cache_s=0)
        return problem is None, (
            "Docker engine answers"
            if problem is None
            else f"{problem}; run 'make setup' or start dockerd"
        )

    def image() -> tuple[bool, str]:
        found = [tag for tag in (settings.image, settings.demo_image) if images.image_exists(tag)]
        return bool(found), (
            f"sandbox image(s) present: {', '.join(found)}"
            if found
            else "no sandbox image yet: 'agentvisor up' builds one, or 'make image'"
        )

    def disk() -> tuple[bool, str]:
        free = disk_free_mb(settings)
        return free >= LOW_DISK_MB, f"{free} MiB free in {settings.state_dir}"

    def api() -> tuple[bool, str]:
        if not server_control.is_running(settings):
            return False, f"no server on {settings.socket_path}: 'agentvisor serve --detach'"
        with ApiClient(settings) as client:
            health = client.get("/v1/health")
        if health.get("ok"):
            return True, f"server answers; database {health.get('db')}"
        problems = {k: v for k, v in health.items() if k in ("db", "disk", "docker")}
        return False, f"server answers but is unwell: {problems}"

    add("tools", tools)
    add("docker", engine)
    add("image", image)
    add("disk", disk)
    add("server", api)
    return checks
