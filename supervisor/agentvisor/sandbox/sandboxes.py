"""The container backend: one locked-down Docker container per agent, found again by its labels.

A thin shell over the Docker SDK; what a container is made of is decided in `sandbox_spec`.
"""

from __future__ import annotations

import builtins
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from agentvisor.config import Settings
from agentvisor.core.sandbox_status import (
    SandboxInfo,
    SandboxStats,
    cpu_percent,
    health_of,
    memory_mb,
    parse_docker_time,
)
from agentvisor.errors import SandboxError, SandboxesNotStopped
from agentvisor.sandbox.docker_engine import docker_client, unreachable
from agentvisor.sandbox.sandbox_spec import (
    LABEL_CONFIG,
    LABEL_MANAGED,
    LABEL_PROJECT,
    LABEL_ROLE,
    LABEL_STATE_DIR,
    RESERVED_LABEL_PREFIX,
    RESTART_POLICY,
    SandboxSpec,
    build_spec,
    check_project,
    container_name,
    gather_spec_inputs,
    home_volume_name,
    network_name,
    ownership_labels,
    state_label,
)

__all__ = [
    "SandboxBackend",
    "SandboxInfo",
    "SandboxSpec",
    "SandboxStats",
    "build_spec",
    "container_name",
    "gather_spec_inputs",
    "health_of",
    "home_volume_name",
    "network_name",
]

log = logging.getLogger("agentvisor.sandboxes")
T = TypeVar("T")
TMUX_SESSION = "agent"
# Prints the pane's history with the screens lost at restarts of the agent CLI spliced in.
HISTORY_COMMAND = ("python3", "-m", "agent_shim.history")
STOP_TIMEOUT_S = 15  # the shim needs up to 10 s (supervisord's stopwaitsecs) to let go
NO_RESTART = {"Name": "no", "MaximumRetryCount": 0}


class SandboxBackend:
    """Creates, adopts, starts, stops and inspects the sandboxes of one state directory.

    Everything is found by labels (managed, state dir, project, role), so a restarted
    supervisor adopts the sandboxes it started, and another state dir's are left alone.
    """

    def __init__(
        self,
        settings: Settings,
        client: docker.DockerClient | None = None,
        max_workers: int = 8,
    ) -> None:
        self.settings = settings
        self._client = client
        self._max_workers = max_workers
        self._state = state_label(settings)
        self._lock = threading.Lock()  # network and volume creation: once per name

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client(max_pool_size=self._max_workers * 2)
        return self._client

    # -- creating and starting --------------------------------------------------------------

    def ensure_running(self, spec: SandboxSpec) -> SandboxInfo:
        """Start the sandbox for `spec`: adopt a container of that name and labels if it is
        up to date, replace it (keeping the home volume) if its configuration or image
        changed, create it if missing."""
        image_id = self._image_id(spec.image)
        container = self._find(spec.name)
        if container is not None:
            self._check_ours(container, spec.project, spec.role)
            reason = self._stale_reason(container, spec, image_id)
            if reason:
                log.info("replacing sandbox %s: %s", spec.name, reason)
                self._call(f"remove the stale sandbox {spec.name}", container.remove, force=True)
                container = None
        if container is None:
            container = self.create(spec)
        return self._run(container)

    def start_many(self, specs: Iterable[SandboxSpec]) -> list[SandboxInfo]:
        """`ensure_running` for several sandboxes at once; every one is tried before a failure
        is reported."""
        specs = builtins.list(specs)
        results = self._parallel(self.ensure_running, specs)
        failures = [f"{s.role}: {r.message}" for s, r in zip(specs, results, strict=True)
                    if isinstance(r, SandboxError)]  # fmt: skip
        if failures:
            raise SandboxError(f"{len(failures)} sandbox(es) did not start: {'; '.join(failures)}")
        return [r for r in results if isinstance(r, SandboxInfo)]

    def create(self, spec: SandboxSpec) -> Container:
        """Create (not start) the container and its home volume. It joins no network."""
        extra = {k: v for k, v in spec.labels.items() if not k.startswith(RESERVED_LABEL_PREFIX)}
        self._ensure_volume(spec.home_volume, spec.project, spec.role, extra)
        try:
            return self.client.containers.create(**spec.create_kwargs())
        except docker.errors.ImageNotFound:
            raise SandboxError(
                f"the image {spec.image} is missing; build it with 'agentvisor image build' or "
                "'make image'"
            ) from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # created meanwhile by another thread or process
                container = self._find(spec.name)
                if container is not None:
                    self._check_ours(container, spec.project, spec.role)
                    return container
            raise SandboxError(f"cannot create the sandbox {spec.name}: {_why(exc)}") from None

    def start(self, project: str, role: str) -> SandboxInfo:
        return self._run(self._get(project, role))

    def _ensure_volume(
        self, name: str, project: str, role: str, extra_labels: Mapping[str, str]
    ) -> None:
        with self._lock:
            try:
                volume = self.client.volumes.get(name)
            except docker.errors.NotFound:
                labels = {**extra_labels, **ownership_labels(self.settings, project, role)}
                self._call(f"create the volume {name}", self.client.volumes.create, name,
                           labels=labels)  # fmt: skip
                return
            except docker.errors.APIError as exc:
                raise SandboxError(f"cannot look up the volume {name}: {_why(exc)}") from None
            if not self._owned(volume.attrs.get("Labels") or {}, project, role):
                raise SandboxError(
                    f"the volume {name} exists but is not this agent's home; remove it (docker "
                    f"volume rm {name}) or use another project name"
                )

    def _run(self, container: Container) -> SandboxInfo:
        container.reload()
        status = container.status
        if container.attrs["HostConfig"]["RestartPolicy"].get("Name") != RESTART_POLICY["Name"]:
            self._call("set the restart policy", container.update, restart_policy=RESTART_POLICY)
        if status == "paused":
            self._call(f"unpause {container.name}", container.unpause)
        elif status in ("created", "exited", "dead"):
            self._call(f"start {container.name}", container.start)
        container.reload()
        return self._info(container)

    # -- stopping and removing --------------------------------------------------------------

    def stop(
        self, project: str, role: str | None = None, timeout_s: int = STOP_TIMEOUT_S
    ) -> builtins.list[str]:
        """Stop the project's sandboxes (or one); they stay stopped until started again. One
        that could not be stopped is named in a SandboxesNotStopped, after the rest stopped."""

        def stop_one(container: Container) -> str:
            # Policy "no" first: `revive` and a restarted engine then leave it stopped.
            self._call("set the restart policy", container.update, restart_policy=NO_RESTART)
            self._call(f"stop {container.name}", container.stop, timeout=timeout_s)
            return str(container.name)

        results = self._parallel(stop_one, self._containers(project, role))
        stopped = [r for r in results if isinstance(r, str)]
        failed = [str(r) for r in results if isinstance(r, SandboxError)]
        if failed:
            raise SandboxesNotStopped(
                f"stopped {len(stopped)} of {len(results)} sandboxes of {project}; "
                f"not stopped: {'; '.join(failed)}",
                stopped,
            )
        return stopped

    def remove(
        self, project: str, role: str | None = None, volumes: bool = False
    ) -> builtins.list[str]:
        """Remove the project's sandboxes (or one); with `volumes`, their home volumes too, and
        the project's bridge network that agentvisor before 0.3 made, once no sandbox is left on
        it. Returns what was removed."""
        removed = []
        for container in self._containers(project, role):
            self._call(f"remove {container.name}", container.remove, force=True)
            removed.append(str(container.name))
        if volumes:
            filters = {"label": self._label_filters(project, role)}
            for volume in self._call("list volumes", self.client.volumes.list, filters=filters):
                self._call(f"remove the volume {volume.name}", volume.remove, force=True)
                removed.append(str(volume.name))
        if role is None:
            name = network_name(project)
            for network in self._call("list networks", self.client.networks.list, names=[name]):
                if network.name != name or not self._owned(
                    network.attrs.get("Labels") or {}, project
                ):
                    continue
                try:
                    network.remove()
                    removed.append(name)
                except docker.errors.APIError as exc:  # something else still uses it: keep it
                    log.warning("network %s kept: %s", name, _why(exc))
        return removed

    # -- looking -----------------------------------------------------------------------------

    def list(self, project: str | None = None) -> builtins.list[SandboxInfo]:
        """This state dir's sandboxes (of one project), by project and role."""
        infos = [self._info(c) for c in self._containers(project)]
        return sorted(infos, key=lambda i: (i.project, i.role))

    def get(self, project: str, role: str) -> SandboxInfo:
        return self._info(self._get(project, role))

    def stats(
        self, project: str | None = None, role: str | None = None
    ) -> dict[tuple[str, str], SandboxStats]:
        """CPU and memory of each running sandbox, one sample each, sampled concurrently."""

        def sample(container: Container) -> tuple[tuple[str, str], SandboxStats]:
            key = (container.labels[LABEL_PROJECT], container.labels[LABEL_ROLE])
            raw = self._call(f"read the stats of {container.name}", container.stats, stream=False)
            limit = (raw.get("memory_stats") or {}).get("limit")
            return key, SandboxStats(cpu_percent(raw), memory_mb(raw), limit and limit / 2**20)

        running = [c for c in self._containers(project, role) if c.status == "running"]
        return dict(r for r in self._parallel(sample, running) if isinstance(r, tuple))

    def exec_tty_argv(self, project: str, role: str) -> builtins.list[str]:
        """`docker exec -it` into the agent's tmux session: for a person at a terminal."""
        container = self._running(project, role)
        docker_cli = shutil.which("docker")
        if docker_cli is None:
            raise SandboxError(
                "the docker command line is not installed; attaching needs it (install "
                "docker-ce-cli or docker.io)"
            )
        user = self._user(container)
        return [docker_cli, "exec", "-it", "-u", user, "-w", "/workspace", str(container.name),
                "tmux", "attach", "-t", TMUX_SESSION]  # fmt: skip

    def pane_history(self, project: str, role: str, lines: int = 200) -> str:
        """The last `lines` lines of the agent's pane, scrollback included (joined lines), with
        the screens that restarts of the agent CLI cleared put back (agent_shim.history);
        `lines=0` gives the whole scrollback."""
        container = self._running(project, role)
        command = [*HISTORY_COMMAND, "--lines", str(max(lines, 0)), "--session", TMUX_SESSION]
        code, output, errors = self._exec(container, command)
        if code != 0 and f"No module named {HISTORY_COMMAND[-1]}" in errors:
            # An image older than the saved screens: tmux's own history.
            start = "-" if lines <= 0 else f"-{lines}"
            tmux = ["tmux", "capture-pane", "-p", "-J", "-S", start, "-t", TMUX_SESSION]
            code, output, errors = self._exec(container, tmux)
        if code != 0:
            raise SandboxError(
                f"no agent pane in {container.name} yet ({errors.strip() or 'tmux failed'}); "
                f"the shim starts it: see 'docker logs {container.name}'"
            )
        return last_lines(output, lines)

    def _exec(self, container: Container, argv: builtins.list[str]) -> tuple[int, str, str]:
        """Run `argv` in the sandbox as its user: exit code, stdout, stderr."""
        result = self._call(f"read the pane of {container.name}", container.exec_run, argv,
                            user=self._user(container), demux=True)  # fmt: skip
        stdout, stderr = result.output or (None, None)
        return int(result.exit_code or 0), _text(stdout), _text(stderr)

    def wait_ready(
        self,
        project: str,
        role: str,
        timeout_s: float = 60.0,
        ready: Callable[[], bool] | None = None,
        interval_s: float = 0.1,
    ) -> float:
        """Wait until the sandbox runs and `ready()` holds (default: the agent's tmux session
        exists); return the seconds waited, or SandboxError saying what the sandbox did."""
        started = time.monotonic()
        name = container_name(project, role)
        while True:
            container = self._get(project, role)
            if container.status == "running":
                if ready is not None:
                    if ready():
                        return time.monotonic() - started
                else:
                    check = ["tmux", "has-session", "-t", TMUX_SESSION]
                    result = container.exec_run(check, user=self._user(container))
                    if result.exit_code == 0:
                        return time.monotonic() - started
            elif container.status in ("exited", "dead"):
                tail = container.logs(tail=5).decode(errors="replace").strip()
                raise SandboxError(
                    f"the sandbox {name} exited (code {container.attrs['State']['ExitCode']}): "
                    f"{tail or 'no output'}"
                )
            if time.monotonic() - started > timeout_s:
                raise SandboxError(
                    f"the sandbox {name} was not ready within {timeout_s:.0f} s (status "
                    f"{container.status}); see 'docker logs {name}'"
                )
            time.sleep(interval_s)

    def revive(self, project: str | None = None) -> builtins.list[SandboxInfo]:
        """Start the sandboxes that died although nobody stopped them through agentvisor.

        Docker restarts a crashed sandbox by itself, but treats `docker kill` as a wish to keep
        it down; `stop` sets the restart policy to "no", so those are the ones left alone.
        """
        return self.revive_and_list(project)[0]

    def container_events(self) -> Any:
        """The engine's stream of events about this state dir's sandboxes (a blocking
        iterator of dicts; `close()` ends it)."""
        filters = {"type": "container", "label": [f"{LABEL_STATE_DIR}={self._state}"]}
        return self._call("read the engine's events", self.client.events, decode=True,
                          filters=filters)  # fmt: skip

    def revive_and_list(
        self, project: str | None = None
    ) -> tuple[builtins.list[SandboxInfo], builtins.list[SandboxInfo]]:
        """`revive`, and then every sandbox as `list` shows it, from one look at the engine
        (the watchdog's pass: a listing inspects every container, one request each)."""
        revived: dict[str, SandboxInfo] = {}
        containers = self._containers(project)
        for container in containers:
            policy = container.attrs["HostConfig"]["RestartPolicy"].get("Name")
            if container.status in ("exited", "dead") and policy == RESTART_POLICY["Name"]:
                log.warning("sandbox %s had stopped by itself; starting it", container.name)
                revived[str(container.id)] = self._run(container)
        infos = [revived.get(str(c.id)) or self._info(c) for c in containers]
        return builtins.list(revived.values()), sorted(infos, key=lambda i: (i.project, i.role))

    # -- internals ---------------------------------------------------------------------------

    def _label_filters(self, project: str | None, role: str | None = None) -> builtins.list[str]:
        filters = [f"{LABEL_MANAGED}=1", f"{LABEL_STATE_DIR}={self._state}"]
        if project is not None:
            filters.append(f"{LABEL_PROJECT}={check_project(project)}")
        if role is not None:
            filters.append(f"{LABEL_ROLE}={role}")
        return filters

    def _containers(self, project: str | None, role: str | None = None) -> builtins.list[Container]:
        filters = {"label": self._label_filters(project, role)}
        found = self._call("list containers", self.client.containers.list, all=True,
                           filters=filters, ignore_removed=True)  # fmt: skip
        return builtins.list(found)

    def _find(self, name: str) -> Container | None:
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise SandboxError(f"cannot look up the sandbox {name}: {_why(exc)}") from None
        except requests.exceptions.ConnectionError as exc:
            raise unreachable(exc, f"look up the sandbox {name}") from exc

    def _get(self, project: str, role: str) -> Container:
        name = container_name(project, role)
        container = self._find(name)
        if container is None:
            raise SandboxError(
                f"there is no sandbox for {role} in {project}; start the team with 'agentvisor up'"
            )
        self._check_ours(container, project, role)
        return container

    def _running(self, project: str, role: str) -> Container:
        container = self._get(project, role)
        if container.status != "running":
            raise SandboxError(
                f"the sandbox of {role} in {project} is {container.status}; start it with "
                "'agentvisor resume'"
            )
        return container

    def _owned(self, labels: Mapping[str, str], project: str, role: str | None = None) -> bool:
        return all(labels.get(k) == v
                   for k, v in ownership_labels(self.settings, project, role).items())  # fmt: skip

    def _check_ours(self, container: Container, project: str, role: str) -> None:
        labels = container.labels or {}
        if self._owned(labels, project, role):
            return
        owner = labels.get(LABEL_STATE_DIR)
        whose = f"the state dir {owner}" if owner else "no agentvisor state dir"
        raise SandboxError(
            f"a container named {container.name} exists but belongs to {whose}; remove it "
            f"(docker rm -f {container.name}) or use another project name"
        )

    def _stale_reason(self, container: Container, spec: SandboxSpec, image_id: str) -> str:
        if container.labels.get(LABEL_CONFIG) != spec.labels[LABEL_CONFIG]:
            return "its configuration changed"
        if container.attrs.get("Image") != image_id:
            return f"the image {spec.image} was rebuilt"
        return ""

    def _image_id(self, image: str) -> str:
        try:
            return str(self.client.images.get(image).id)
        except docker.errors.ImageNotFound:
            raise SandboxError(
                f"the image {image} is missing; build it with 'agentvisor image build' or "
                "'make image'"
            ) from None
        except docker.errors.APIError as exc:
            raise SandboxError(f"cannot look up the image {image}: {_why(exc)}") from None

    def _user(self, container: Container) -> str:
        return str(container.attrs["Config"].get("User") or "{}:{}".format(
            *self.settings.sandbox_ids()))  # fmt: skip

    def _info(self, container: Container) -> SandboxInfo:
        attrs = container.attrs
        state = attrs.get("State") or {}
        return SandboxInfo(
            project=container.labels.get(LABEL_PROJECT, ""),
            role=container.labels.get(LABEL_ROLE, ""),
            name=str(container.name),
            container_id=str(container.id),
            status=str(state.get("Status", container.status)),
            health=(state.get("Health") or {}).get("Status"),
            started_at=parse_docker_time(state.get("StartedAt")),
            restart_count=int(attrs.get("RestartCount") or 0),
            image=str(attrs.get("Config", {}).get("Image", "")),
            exit_code=state.get("ExitCode"),
            restart_policy=str(attrs["HostConfig"]["RestartPolicy"].get("Name") or "no"),
        )

    def _call(self, what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the engine; its failures become SandboxError / EngineUnavailable."""
        try:
            return function(*args, **kwargs)
        except docker.errors.APIError as exc:
            raise SandboxError(f"cannot {what}: {_why(exc)}") from None
        except requests.exceptions.ConnectionError as exc:
            raise unreachable(exc, what) from exc

    def _parallel(
        self, function: Callable[[Any], T], items: builtins.list[Any]
    ) -> builtins.list[T | SandboxError]:
        """`function` over `items` in a thread pool; SandboxErrors are returned, not raised."""

        def guarded(item: Any) -> T | SandboxError:
            try:
                return function(item)
            except SandboxError as exc:
                return exc

        if len(items) <= 1:
            return [guarded(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self._max_workers, len(items))) as pool:
            return builtins.list(pool.map(guarded, items))


def _why(exc: docker.errors.APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc)


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode(errors="replace")


def last_lines(captured: str, lines: int) -> str:
    """The last `lines` lines of a pane capture (all for `lines <= 0`), without the blank rows
    below the cursor that tmux pads the visible screen with."""
    rows = captured.rstrip("\n").split("\n")
    while rows and not rows[-1].strip():
        rows.pop()
    if lines > 0:
        rows = rows[-lines:]
    return "\n".join(rows) + "\n" if rows else ""
