"""The local Docker engine: one way to reach it, and one clear error when it does not answer."""

from __future__ import annotations

import os

import docker
import docker.errors
import requests.exceptions

from agentvisor.errors import EngineUnavailable


def engine_address() -> str:
    """Where the engine is reached: `DOCKER_HOST`, else its default socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def docker_client(max_pool_size: int = 16) -> docker.DockerClient:
    """A client of the local Docker engine, or EngineUnavailable saying what to do."""
    try:
        client = docker.from_env(max_pool_size=max_pool_size)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise unreachable(exc) from exc
    return client


def unreachable(exc: Exception, doing: str | None = None) -> EngineUnavailable:
    """The error for an engine that does not answer (while `doing` something), saying what
    to do about it."""
    during = f" (while trying to {doing})" if doing else ""
    return EngineUnavailable(
        f"Docker engine not reachable at {engine_address()}{during}; run 'make setup' or start "
        f"dockerd ({exc})"
    )
