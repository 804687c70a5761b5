"""What a sandbox container is made of: name, labels, environment, mounts, limits, lock-down.

`gather_spec_inputs` does the host's part (git, the project's TOML, paths, the token file) into
one `SpecInputs`; `build_spec` turns that into a `SandboxSpec` with no I/O, the only way to one,
refusing any input that would weaken the sandbox. No Docker here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agentvisor.config import Settings
from agentvisor.errors import SandboxError
from agentvisor.git.project_repo import start_branch as checked_out_branch
from agentvisor.git.worktrees import is_agent_clone
from agentvisor.sandbox.mounts import Mount
from agentvisor.sandbox.sandbox_policy import (
    ENGINE_SOCKETS,
    HOME,
    WORKDIR,
    ProjectSandboxConfig,
    check_env,
    check_mount_source,
    check_project_env,
    check_unique_targets,
    checked_extra_mount,
    committed_project_config,
    parse_project_config,
)
from agentvisor.sandbox.sandbox_sockets import API_DIR_TARGET, prepare_folder

LABEL_MANAGED = "agentvisor.managed"
LABEL_PROJECT = "agentvisor.project"
LABEL_ROLE = "agentvisor.role"
LABEL_STATE_DIR = "agentvisor.state_dir"
LABEL_CONFIG = "agentvisor.config"  # fingerprint of the spec: a different one means stale
RESERVED_LABEL_PREFIX = "agentvisor."

SOCKET_DIR_TARGET = "/run/agentvisor/sock"
TOKEN_TARGET = "/run/agentvisor/token"
PROFILES = ("claude", "demo", "generic")
# `unless-stopped`: a sandbox whose init dies (crash, OOM) comes back, also after a reboot of the
# host, for as long as the team runs; Docker backs off to one try a minute. `on-failure:N` would
# give up for good after N crashes over the sandbox's whole life. `stop` sets "no" first.
RESTART_POLICY = {"Name": "unless-stopped", "MaximumRetryCount": 0}
LOG_CONFIG = {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}}
RUN_TMPFS_MAX_MB = 64
EGRESS_PORT = 7398  # the shim's egress relay on the sandbox's loopback


_PROJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")
_ROLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class SpecMount:
    """A bind mount (`source` a host path) or a named volume (`source` its name)."""

    kind: str  # bind | volume
    source: str
    target: str
    read_only: bool

    def as_docker(self) -> dict[str, Any]:
        """The Engine API's form, as `docker.types.Mount` builds it."""
        return {
            "Type": self.kind,
            "Source": self.source,
            "Target": self.target,
            "ReadOnly": self.read_only,
        }


@dataclass(frozen=True)
class SandboxSpec:
    """Everything `docker create` needs for one agent's sandbox."""

    name: str
    project: str
    role: str
    image: str
    hostname: str
    user: str  # "uid:gid"
    labels: Mapping[str, str]
    env: Mapping[str, str]
    mounts: tuple[SpecMount, ...]
    tmpfs: Mapping[str, str]
    home_volume: str
    mem_limit_mb: int
    nano_cpus: int
    pids_limit: int
    cap_drop: tuple[str, ...] = ("ALL",)
    security_opt: tuple[str, ...] = ("no-new-privileges:true",)
    init: bool = True
    read_only: bool = True
    privileged: bool = False
    # No interface but loopback, no DNS: the way out is the socket folder (docs/sandboxes.md).
    network_mode: str = "none"
    working_dir: str = WORKDIR
    restart_policy: Mapping[str, Any] = field(default_factory=lambda: dict(RESTART_POLICY))

    @property
    def fingerprint(self) -> str:
        """A hash of the container's configuration, the restart policy and this label aside."""
        kwargs = self.create_kwargs()
        kwargs.pop("restart_policy")
        # A resumed start is the same sandbox: no reason to replace a running one.
        kwargs["environment"].pop("AGENTVISOR_RESUME", None)
        kwargs["labels"] = {k: v for k, v in kwargs["labels"].items() if k != LABEL_CONFIG}
        canonical = json.dumps(kwargs, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def create_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `DockerClient.containers.create` (mounts as plain dicts)."""
        return {
            "image": self.image,
            "name": self.name,
            "hostname": self.hostname,
            "user": self.user,
            "labels": dict(self.labels),
            "environment": dict(self.env),
            "mounts": [m.as_docker() for m in self.mounts],
            "tmpfs": dict(self.tmpfs),
            "network_mode": self.network_mode,
            "mem_limit": f"{self.mem_limit_mb}m",
            "memswap_limit": f"{self.mem_limit_mb}m",  # no swap on top
            "nano_cpus": self.nano_cpus,
            "pids_limit": self.pids_limit,
            "cap_drop": list(self.cap_drop),
            "security_opt": list(self.security_opt),
            "init": self.init,
            "read_only": self.read_only,
            "privileged": self.privileged,
            "working_dir": self.working_dir,
            "restart_policy": dict(self.restart_policy),
            "log_config": LOG_CONFIG,
            "detach": True,
        }


# --- names -------------------------------------------------------------------------------------


def check_project(project: str) -> str:
    if not _PROJECT_NAME.fullmatch(project or ""):
        raise SandboxError(
            f"the project name {project!r} cannot name a container; use up to 80 letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )
    return project


def check_role(role: str) -> str:
    if not _ROLE_NAME.fullmatch(role or ""):
        raise SandboxError(
            f"the role {role!r} cannot name a container; use up to 64 letters, digits, '_' "
            "or '-', starting with a letter or digit"
        )
    return role


def container_name(project: str, role: str) -> str:
    return f"agentvisor-{check_project(project)}-{check_role(role)}"


def network_name(project: str) -> str:
    """The per-project bridge of agentvisor before 0.3; only removed now, never created."""
    return f"agentvisor-{check_project(project)}"


def home_volume_name(project: str, role: str) -> str:
    return f"agentvisor-home-{check_project(project)}-{check_role(role)}"


def state_label(settings: Settings) -> str:
    """The state directory as sandboxes are labelled with it: one host, several state dirs."""
    return str(Path(settings.state_dir).expanduser().resolve())


def token_file_path(settings: Settings, project: str, role: str) -> Path:
    return settings.tokens_dir / check_project(project) / f"{check_role(role)}.token"


def ownership_labels(settings: Settings, project: str, role: str | None = None) -> dict[str, str]:
    """The labels that say a container, network or volume is this state dir's (and whose)."""
    labels = {
        LABEL_MANAGED: "1",
        LABEL_STATE_DIR: state_label(settings),
        LABEL_PROJECT: check_project(project),
    }
    if role is not None:
        labels[LABEL_ROLE] = check_role(role)
    return labels


# --- the spec ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecInputs:
    """Everything `build_spec` needs, gathered from the host by `gather_spec_inputs`: paths
    resolved and checked, the project's committed settings read, the token read."""

    settings: Settings
    project: str
    role: str
    profile: str
    image: str
    uid: int
    gid: int
    worktree: Path  # the agent's own clone, resolved
    socket_dir: Path
    api_dir: Path  # the sandbox's own API socket folder
    token_file: Path
    token: str  # the token file's text
    options: ProjectSandboxConfig  # the project's own settings (untrusted, validated)
    owner_labels: Mapping[str, str]  # ownership_labels
    extra_env: Mapping[str, str] = field(default_factory=dict)
    credential_mounts: tuple[Mount, ...] = ()
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    resume: bool = False


def gather_spec_inputs(
    settings: Settings,
    *,
    project: str,
    role: str,
    worktree: Path,
    repo_root: Path,
    token_file: Path,
    profile: str,
    image: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    credential_mounts: Sequence[Mount] = (),
    project_config: Mapping[str, Any] | None = None,
    start_branch: str | None = None,
    extra_labels: Mapping[str, str] | None = None,
    resume: bool = False,
    engine_sockets: Sequence[str] = ENGINE_SOCKETS,
) -> SpecInputs:
    """The host's side of a sandbox's spec: git, the TOML file, the socket folder it creates,
    the checks on paths. `build_spec(gather_spec_inputs(...))` is the container for `role`.

    Trusted (the operator's): settings, `extra_env`, `credential_mounts` (read-only host files
    such as Claude's credentials), `extra_labels`. Untrusted: `project_config`, the project's own
    settings (None reads `.agentvisor/sandbox.toml` as committed on `start_branch`, by default
    the branch checked out in `repo_root`; never a checkout's copy), which may only add
    environment variables nobody else sets, or lower the limits. Anything else raises
    SandboxError naming the rule it would break.
    """
    check_project(project)
    check_role(role)
    _check_profile(profile, role)
    repo_root = Path(repo_root).resolve()
    worktree = Path(worktree).resolve()
    if project_config is None:
        branch = start_branch or checked_out_branch(repo_root)
        options = committed_project_config(settings, repo_root, branch)
    else:
        options = parse_project_config(project_config, settings)

    uid, gid = settings.sandbox_ids()
    socket_dir = Path(settings.socket_dir).resolve()
    api_dir = prepare_folder(settings, project, role).resolve()  # its own API socket
    token = Path(token_file).resolve()
    for path, what, hint in (
        (worktree, "the worktree", "make it with ensure_worktree first"),
        (socket_dir, "the API socket folder", "start the server first"),
        (token, "the agent's token file", "write it with write_token_file first"),
    ):
        if not path.exists():
            raise SandboxError(f"{what} {path} does not exist; {hint}")

    # The agent's own repository alone: nothing of the project's .git (docs/sandboxes.md).
    if not is_agent_clone(worktree):
        raise SandboxError(
            f"{worktree} is not an agent's repository of its own; make it with ensure_worktree"
        )
    binds = _binds(worktree, socket_dir, api_dir, token)
    extra = _checked_extra_mounts(binds, credential_mounts)
    allowed_state = {socket_dir, api_dir, token}
    for mount in [*binds, *extra]:
        check_mount_source(mount.source, settings, allowed_state, engine_sockets)
    return SpecInputs(
        settings=settings,
        project=project,
        role=role,
        profile=profile,
        image=image or settings.image,
        uid=uid,
        gid=gid,
        worktree=worktree,
        socket_dir=socket_dir,
        api_dir=api_dir,
        token_file=token,
        token=token.read_text(encoding="utf-8").strip(),
        options=options,
        owner_labels=ownership_labels(settings, project, role),
        extra_env=dict(extra_env or {}),
        credential_mounts=tuple(credential_mounts),
        extra_labels=dict(extra_labels or {}),
        resume=resume,
    )


def build_spec(inputs: SpecInputs) -> SandboxSpec:
    """The container for the role, locked down, from its gathered inputs: no I/O. It is the
    only way to a `SandboxSpec`, and it refuses any input that would weaken the sandbox."""
    settings, project, role = inputs.settings, inputs.project, inputs.role
    check_project(project)
    check_role(role)
    _check_profile(inputs.profile, role)
    options = inputs.options
    binds = _binds(inputs.worktree, inputs.socket_dir, inputs.api_dir, inputs.token_file)
    extra = _checked_extra_mounts(binds, inputs.credential_mounts)

    env = _environment(settings, project, role, inputs.profile, inputs.resume)
    env.update(egress_environment(inputs.token))
    for key, value in inputs.extra_env.items():
        check_env(key, value, "extra_env")
        env[key] = value
    for key, value in options.env.items():  # the operator's and agentvisor's values win
        check_project_env(key, value, options.source, taken=env)
    env.update(options.env)

    labels = dict(inputs.extra_labels)
    for key in labels:
        if key.startswith(RESERVED_LABEL_PREFIX):
            raise SandboxError(
                f"the label {key} is agentvisor's own; give extra labels another prefix"
            )
    labels.update(inputs.owner_labels)

    memory_mb = options.memory_mb or settings.memory_mb
    tmpfs_mb = options.tmpfs_mb or settings.tmpfs_mb
    home = home_volume_name(project, role)
    spec = SandboxSpec(
        name=container_name(project, role),
        project=project,
        role=role,
        image=inputs.image,
        hostname=role,
        user=f"{inputs.uid}:{inputs.gid}",
        labels=labels,
        env=env,
        mounts=(
            *(SpecMount("bind", str(m.source), str(m.target), m.read_only) for m in binds),
            SpecMount("volume", home, HOME, False),
            *(SpecMount("bind", str(m.source), str(m.target), True) for m in extra),
        ),
        tmpfs={
            "/tmp": f"rw,exec,nosuid,nodev,size={tmpfs_mb}m,mode=1777",
            # Small: it only holds the mount points of /run/agentvisor.
            "/run": f"rw,noexec,nosuid,nodev,size={min(tmpfs_mb, RUN_TMPFS_MAX_MB)}m,mode=0755",
        },
        home_volume=home,
        mem_limit_mb=memory_mb,
        nano_cpus=round((options.cpus or settings.cpus) * 1e9),
        pids_limit=options.pids or settings.pids,
    )
    return replace(spec, labels={**spec.labels, LABEL_CONFIG: spec.fingerprint})


def _check_profile(profile: str, role: str) -> None:
    if profile not in PROFILES:
        raise SandboxError(
            f"unknown agent profile {profile!r} for {role}: use {', '.join(PROFILES)} "
            "(resolve 'auto' before building the sandbox)"
        )


def _binds(worktree: Path, socket_dir: Path, api_dir: Path, token: Path) -> list[Mount]:
    return [
        Mount(worktree, Path(WORKDIR), False),
        Mount(socket_dir, Path(SOCKET_DIR_TARGET), False),
        Mount(api_dir, Path(API_DIR_TARGET), False),
        Mount(token, Path(TOKEN_TARGET), True),
    ]


def _checked_extra_mounts(
    binds: Sequence[Mount], credential_mounts: Sequence[Mount]
) -> list[Mount]:
    fixed_targets = [str(m.target) for m in binds] + [HOME]
    extra = [checked_extra_mount(m, fixed_targets, "credential mount") for m in credential_mounts]
    check_unique_targets([*fixed_targets, *(str(m.target) for m in extra)])
    return extra


def egress_environment(token: str, port: int = EGRESS_PORT) -> dict[str, str]:
    """The proxy variables: every HTTP(S) client in the sandbox goes to the shim's egress relay,
    which the host's proxy answers; the agent's token as the proxy password says who asks (the
    token is in the sandbox anyway). Loopback goes direct: the git channel is there."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        raise SandboxError("the agent's token file does not hold a token; write it again")
    proxy = f"http://agent:{token}@127.0.0.1:{port}"
    no_proxy = "127.0.0.1,localhost"
    env = {"AGENTVISOR_EGRESS_PORT": str(port)}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = proxy
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


def _environment(
    settings: Settings, project: str, role: str, profile: str, resume: bool
) -> dict[str, str]:
    env = {
        # The sandbox's own socket: no other sandbox can reach it (docs/limits.md).
        "AGENTVISOR_SOCKET": f"{API_DIR_TARGET}/api.sock",
        "AGENTVISOR_TOKEN_FILE": TOKEN_TARGET,
        "AGENTVISOR_PROJECT": project,
        "AGENTVISOR_ROLE": role,
        "AGENTVISOR_PROFILE": profile,
        "AGENTVISOR_WORKDIR": WORKDIR,
        "HOME": HOME,
        # Commits say which agent made them (the image's gitconfig has a generic identity).
        "GIT_AUTHOR_NAME": f"{role} ({project})",
        "GIT_AUTHOR_EMAIL": f"{role}@{project}.agentvisor.invalid",
        "GIT_COMMITTER_NAME": f"{role} ({project})",
        "GIT_COMMITTER_EMAIL": f"{role}@{project}.agentvisor.invalid",
    }
    if settings.agent_command:
        env["AGENTVISOR_AGENT_COMMAND"] = settings.agent_command
    if settings.ready_pattern:
        env["AGENTVISOR_READY_PATTERN"] = settings.ready_pattern
    if profile == "generic" and not (settings.agent_command and settings.ready_pattern):
        raise SandboxError(
            "the generic profile needs agent_command and ready_pattern: set them in "
            "config.toml or AGENTVISOR_AGENT_COMMAND / AGENTVISOR_READY_PATTERN"
        )
    if resume:
        env["AGENTVISOR_RESUME"] = "1"
    return env
