"""The rules that keep a sandbox locked down, whoever asks for more: which mounts, variables and
limits a caller or a project's own `.agentvisor/sandbox.toml` may add. Pure but for reading paths
(and the project's committed files, through git).
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from agentvisor.config import Settings
from agentvisor.errors import InvalidInput, SandboxError
from agentvisor.git.project_files import committed_sandbox_toml
from agentvisor.sandbox.mounts import Mount

WORKDIR = "/workspace"
HOME = "/home/agent"
# Engine sockets no sandbox may see, itself or through a folder above it.
ENGINE_SOCKETS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
)
# Container paths an extra mount may not cover, replace or sit under.
FORBIDDEN_TARGETS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/opt/agentvisor",
    "/proc", "/run/agentvisor", "/sbin", "/sys", "/usr", "/var", WORKDIR,
)  # fmt: skip
# Variables that say who and where the agent is: set by agentvisor only.
RESERVED_ENV = (
    "AGENTVISOR_SOCKET", "AGENTVISOR_TOKEN_FILE", "AGENTVISOR_PROJECT", "AGENTVISOR_ROLE",
    "AGENTVISOR_PROFILE", "AGENTVISOR_WORKDIR", "HOME", "PATH", "PYTHONPATH", "TMUX_TMPDIR",
    "DOCKER_HOST",
)  # fmt: skip
PROJECT_CONFIG_FILE = Path(".agentvisor") / "sandbox.toml"
# What a project's own configuration may not touch, by the rule it would break.
PROJECT_RULES = {
    "privileged": "no-privileged",
    "cap_add": "no-capabilities",
    "cap_drop": "no-capabilities",
    "capabilities": "no-capabilities",
    "network": "own-network-only",
    "network_mode": "own-network-only",
    "networks": "own-network-only",
    "net": "own-network-only",
    "extra_hosts": "own-network-only",
    "ports": "own-network-only",
    "security_opt": "fixed-security-options",
    "seccomp": "fixed-security-options",
    "apparmor": "fixed-security-options",
    "no_new_privileges": "fixed-security-options",
    "user": "fixed-user",
    "group_add": "fixed-user",
    "userns_mode": "fixed-user",
    "read_only": "read-only-root",
    "tmpfs": "read-only-root",
    "devices": "no-devices",
    "device_requests": "no-devices",
    "device_cgroup_rules": "no-devices",
    "pid_mode": "no-host-namespaces",
    "ipc_mode": "no-host-namespaces",
    "uts_mode": "no-host-namespaces",
    "cgroupns": "no-host-namespaces",
    "cgroup_parent": "no-host-namespaces",
    "mounts": "no-project-mounts",
    "volumes": "no-project-mounts",
    "binds": "no-project-mounts",
    "volumes_from": "no-project-mounts",
    "sysctls": "fixed-kernel-settings",
    "runtime": "fixed-kernel-settings",
    "image": "fixed-image",
    "entrypoint": "fixed-image",
    "command": "fixed-image",
}
PROJECT_KEYS = ("env", "memory_mb", "cpus", "pids", "tmpfs_mb")
# Variables a project may not set, whatever their case, by the rule they would break: they load
# code into every process, steer the agent's model access, traffic or git, or say who it is.
PROJECT_ENV_RULES = {
    "AGENTVISOR_*": "fixed-identity",
    "DOCKER_*": "fixed-identity",
    "TMUX*": "fixed-identity",
    "LD_*": "no-loader-env",
    "GLIBC_TUNABLES": "no-loader-env",
    "GCONV_PATH": "no-loader-env",
    "PATH": "no-startup-code-env",
    "HOME": "no-startup-code-env",
    "PYTHON*": "no-startup-code-env",
    "NODE_OPTIONS": "no-startup-code-env",
    "BASH_ENV": "no-startup-code-env",
    "ENV": "no-startup-code-env",
    "PERL5OPT": "no-startup-code-env",
    "PERL5LIB": "no-startup-code-env",
    "RUBYOPT": "no-startup-code-env",
    "ANTHROPIC_*": "operator-model-access",
    "CLAUDE_*": "operator-model-access",
    "*_PROXY": "no-traffic-steering",
    "NODE_TLS_REJECT_UNAUTHORIZED": "no-traffic-steering",
    "NODE_EXTRA_CA_CERTS": "no-traffic-steering",
    "SSL_CERT_FILE": "no-traffic-steering",
    "SSL_CERT_DIR": "no-traffic-steering",
    "REQUESTS_CA_BUNDLE": "no-traffic-steering",
    "CURL_CA_BUNDLE": "no-traffic-steering",
    "GIT_*": "no-git-env",  # GIT_CONFIG_*, GIT_SSH_COMMAND... would steer the push channel
    "XDG_CONFIG_HOME": "no-git-env",  # git reads $XDG_CONFIG_HOME/git/config
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ProjectSandboxConfig:
    """What a project's own `.agentvisor/sandbox.toml` may set, once validated."""

    source: str = "the project config"  # where it came from, for messages
    env: Mapping[str, str] = field(default_factory=dict)  # only variables nobody else sets
    memory_mb: int | None = None  # only lower than the operator's settings
    cpus: float | None = None
    pids: int | None = None
    tmpfs_mb: int | None = None


def check_env(key: str, value: str, source: str) -> None:
    if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
        raise SandboxError(f"{key!r} in {source} is not a valid environment variable name")
    if not isinstance(value, str) or "\0" in value:
        raise SandboxError(f"the value of {key} in {source} must be a string without NUL")
    if key in RESERVED_ENV:
        raise SandboxError(
            f"{source} may not set {key} (rule fixed-identity: agentvisor sets it); remove it"
        )


def checked_extra_mount(mount: Mount, fixed_targets: Sequence[str], what: str) -> Mount:
    if not mount.read_only:
        raise SandboxError(
            f"the {what} of {mount.source} must be read-only (rule read-only-extra-mounts)"
        )
    target = PurePosixPath(str(mount.target))
    if (
        not target.is_absolute()
        or ".." in target.parts
        or str(target) != os.path.normpath(str(target))
    ):
        raise SandboxError(f"the {what} target {target} must be a plain absolute path")
    for forbidden in ("/", *FORBIDDEN_TARGETS, *fixed_targets):
        if forbidden == HOME and target.parent == PurePosixPath(HOME):
            continue  # a file at the top of the home volume, e.g. ~/.gitconfig
        if forbidden == HOME and _under(target, HOME):
            # Docker would create the folders in between as root, in the agent's own home:
            # ~/.claude owned by root breaks the agent CLI.
            raise SandboxError(
                f"the {what} target {target} would make folders in {HOME} that the agent cannot "
                f"write (rule home-stays-writable); mount it directly in {HOME} or under /mnt"
            )
        if target == PurePosixPath(forbidden) or _under(PurePosixPath(forbidden), target):
            raise SandboxError(
                f"the {what} target {target} would cover {forbidden} (rule "
                "allowed-mounts-only); mount it somewhere else"
            )
        if forbidden != "/" and _under(target, forbidden):
            raise SandboxError(
                f"the {what} target {target} is inside {forbidden} (rule allowed-mounts-only); "
                "mount it somewhere else"
            )
    return Mount(Path(os.path.realpath(mount.source)), Path(str(target)), True)


def _under(path: PurePosixPath | Path, folder: str | PurePosixPath | Path) -> bool:
    """True when `path` is strictly inside `folder`."""
    path, folder = PurePosixPath(str(path)), PurePosixPath(str(folder))
    return path != folder and path.is_relative_to(folder)


def check_mount_source(
    source: Path, settings: Settings, allowed_state: set[Path], engine_sockets: Sequence[str]
) -> None:
    real = Path(os.path.realpath(source))
    if not real.exists():
        raise SandboxError(f"the mount source {source} does not exist; create it first")
    for engine in engine_sockets:
        engine_real = Path(os.path.realpath(engine))
        if real == engine_real or _under(engine_real, real):
            raise SandboxError(
                f"{source} is or contains the container engine's socket {engine} (rule "
                "no-docker-socket: a sandbox must never reach the engine)"
            )
    if stat.S_ISSOCK(real.stat().st_mode):
        raise SandboxError(
            f"{source} is a socket (rule no-docker-socket: only the agentvisor API's folder "
            "is mounted)"
        )
    state = Path(os.path.realpath(settings.state_dir))
    if real in allowed_state:
        return
    if real == state or _under(state, real) or _under(real, state):
        raise SandboxError(
            f"{source} would expose the agentvisor state directory {state} (rule no-state-dir: "
            "only the socket folder and the agent's own token are mounted)"
        )


def check_unique_targets(targets: Sequence[str]) -> None:
    seen: set[str] = set()
    for target in targets:
        if target in seen:
            raise SandboxError(f"two mounts target {target}; each container path is mounted once")
        seen.add(target)


# --- a project's own configuration -------------------------------------------------------------


def committed_project_config(
    settings: Settings, repo_root: Path, start_branch: str
) -> ProjectSandboxConfig:
    """The project's own sandbox settings as committed on its start branch, validated."""
    where = _project_config_where(repo_root, start_branch)
    return parse_project_config(load_project_config(repo_root, start_branch), settings, where)


def _project_config_where(repo_root: Path, start_branch: str) -> str:
    return f"{PROJECT_CONFIG_FILE} on the branch {start_branch} of {Path(repo_root)}"


def load_project_config(repo_root: Path, start_branch: str) -> dict[str, Any]:
    """The `[sandbox]` table (or whole file) of `.agentvisor/sandbox.toml` as committed on the
    start branch, {} if it has none. A checkout's copy, committed or not, is never read."""
    where = _project_config_where(repo_root, start_branch)
    try:
        text = committed_sandbox_toml(repo_root, start_branch)
    except InvalidInput as exc:
        raise SandboxError(exc.message) from None
    if text is None:
        return {}
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SandboxError(f"{where} is not valid TOML ({exc}); fix or remove it") from None
    table = data.get("sandbox", data)
    return table if isinstance(table, dict) else {}


def parse_project_config(
    raw: Mapping[str, Any], settings: Settings, where: str = "the project config"
) -> ProjectSandboxConfig:
    """Validate a project's own sandbox settings; SandboxError names the rule an entry breaks."""
    for key in raw:
        if key in PROJECT_RULES:
            raise SandboxError(
                f"{where} may not set {key!r} (rule {PROJECT_RULES[key]}: a project cannot "
                "weaken its sandbox); remove it"
            )
        if key not in PROJECT_KEYS:
            raise SandboxError(
                f"{where}: unknown setting {key!r}; a project may set {', '.join(PROJECT_KEYS)}"
            )
    env = raw.get("env", {})
    if not isinstance(env, Mapping):
        raise SandboxError(f'{where}: env must be a table of NAME = "value"')
    for key, value in env.items():
        check_project_env(key, value, where, taken=())
    limits: dict[str, Any] = {}
    for key, kind, ceiling in (
        ("memory_mb", int, settings.memory_mb),
        ("cpus", float, settings.cpus),
        ("pids", int, settings.pids),
        ("tmpfs_mb", int, settings.tmpfs_mb),
    ):
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise SandboxError(f"{where}: {key} must be a positive number")
        if value > ceiling:
            raise SandboxError(
                f"{where} may not raise {key} to {value} above the operator's {ceiling} (rule "
                "limits-only-lower); lower it or raise the setting in config.toml"
            )
        limits[key] = kind(value)
    return ProjectSandboxConfig(source=where, env=dict(env), **limits)


def check_project_env(key: str, value: str, where: str, taken: Collection[str]) -> None:
    """A project's variable: a valid one, in no reserved family, and not one that agentvisor or
    the operator sets (`taken`): their value always wins, so the project's is refused."""
    check_env(key, value, where)
    for pattern, rule in PROJECT_ENV_RULES.items():
        if fnmatch.fnmatchcase(key.upper(), pattern):
            raise SandboxError(
                f"{where} may not set {key} (rule {rule}: {pattern} is agentvisor's and the "
                "operator's to set, never a project's); remove it from the file"
            )
    if key.upper() in {name.upper() for name in taken}:
        raise SandboxError(
            f"{where} may not set {key} (rule operator-values-win: agentvisor or the operator "
            "already sets it); remove it from the project's file"
        )
