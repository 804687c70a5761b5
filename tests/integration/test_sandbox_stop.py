"""`SandboxBackend.stop` tells what it could not stop (it dropped the error, so `down` said every
sandbox stopped and the queue runner never learnt that one kept running): the rest stop, the
one that did not is named, and `down` still finishes its work before it says so."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from agentvisor.config import Settings, load_settings
from agentvisor.errors import SandboxesNotStopped
from agentvisor.sandbox.sandbox_spec import container_name, ownership_labels
from agentvisor.sandbox.sandboxes import SandboxBackend
from tests.conftest import require
from tests.helpers import docker_answers, name_suffix, sandbox_test_image

pytestmark = pytest.mark.docker


class VanishingBackend(SandboxBackend):
    """The first sandbox listed is removed before it can be stopped (another `destroy`, an
    operator's `docker rm`): a real engine error, at the moment a real one would come."""

    def _containers(self, project, role=None):  # type: ignore[no-untyped-def]
        found = super()._containers(project, role)
        if found:
            found[0].remove(force=True)
        return found


@pytest.fixture
def two_sandboxes(short_tmp: Path) -> Iterator[tuple[str, Settings]]:
    require(docker_answers(), "a Docker engine")
    engine = docker.from_env()
    settings = load_settings(short_tmp / "state", env={})
    project = f"stop{name_suffix(short_tmp)}"
    made = []
    for role in ("orchestrator", "developer"):
        made.append(
            engine.containers.run(
                sandbox_test_image(),
                entrypoint=["sleep", "infinity"],
                detach=True,
                labels=ownership_labels(settings, project, role),
                name=container_name(project, role),
                network_mode="none",
            )
        )
    try:
        yield project, settings
    finally:
        for container in made:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        engine.close()


def test_a_sandbox_that_cannot_be_stopped_is_named_and_the_rest_stop(
    two_sandboxes: tuple[str, Settings],
):
    project, settings = two_sandboxes
    backend = VanishingBackend(settings)
    with pytest.raises(SandboxesNotStopped) as raised:
        backend.stop(project, timeout_s=1)
    assert f"stopped 1 of 2 sandboxes of {project}" in raised.value.message
    assert "not stopped:" in raised.value.message
    assert len(raised.value.stopped) == 1
    left = {s.role: s.status for s in SandboxBackend(settings).list(project)}
    assert list(left.values()) == ["exited"], left
