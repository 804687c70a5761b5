"""The daemon's settings, read once from the environment (docs/contracts.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent_shim.client import DEFAULT_SOCKET, DEFAULT_TOKEN_FILE
from agent_shim.history import default_screens_path
from agent_shim.profiles import Profile, load_profile
from agent_shim.receipts import DEFAULT_RECEIPTS

# Passed into the agent's pane besides every AGENTVISOR_* variable, so that the agent CLI and
# the `agent` command it runs find the API and the package whoever started the tmux server.
# The proxy variables too: the agent's tools reach the web only through the egress relay.
PANE_PASSTHROUGH = (
    "PATH",
    "PYTHONPATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
EGRESS_SOCKET_NAME = "egress.sock"  # beside the API's socket, in the mounted socket folder
TEST_ONLY_PREFIX = "AGENTVISOR_SHIM_"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class ShimConfig:
    profile: Profile
    socket_path: str = DEFAULT_SOCKET
    token_file: str = DEFAULT_TOKEN_FILE
    workdir: str = "/workspace"
    tmux_socket: str | None = None  # a path (tmux -S) or a name (tmux -L); None: default
    session_name: str = "agent"
    journal_path: Path = Path("delivered-markers")  # from_env puts it under $HOME
    # The screens cleared at the CLI's restarts (agent_shim.history); from_env: beside it.
    screens_path: Path = Path("saved-screens")
    heartbeat_interval_s: float = 5.0
    lease_wait_s: float = 25.0
    ready_timeout_s: float = 120.0  # a leased message waits this long for the agent's prompt
    verify_timeout_s: float = 15.0  # typed text must show in the pane within this
    tmux_server_wait_s: float = 10.0  # wait for supervisord's tmux server before starting one
    crash_after_type: str | None = None  # TEST ONLY, see docs/delivery.md
    pane_env: dict[str, str] = field(default_factory=dict)
    # Where `agent hook` leaves its receipts; not AGENTVISOR_SHIM_*: the pane needs it too.
    hook_receipts_path: Path = Path(DEFAULT_RECEIPTS)
    # The channel to the host (git today): a loopback port relayed to the API socket; 0: off.
    channel_port: int = 7399
    # The way out to the web: a loopback port relayed to the host's egress proxy (HTTP_PROXY
    # points here); 0: off. Its socket lies beside the API's.
    egress_port: int = 7398
    role: str | None = None  # AGENTVISOR_ROLE: whose branch `agent/<role>` is published
    publish_remote: str = "origin"  # TEST ONLY: a remote name or URL to publish to

    @property
    def egress_socket_path(self) -> str:
        return os.path.join(os.path.dirname(self.socket_path), EGRESS_SOCKET_NAME)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ShimConfig:
        env = os.environ if env is None else env
        home = env.get("HOME", str(Path.home()))
        journal = env.get("AGENTVISOR_SHIM_JOURNAL") or os.path.join(
            home, ".local", "state", "agentvisor-shim", "delivered"
        )
        pane_env = {
            k: v
            for k, v in env.items()
            if k.startswith("AGENTVISOR_") and not k.startswith(TEST_ONLY_PREFIX)
        }
        pane_env.update({k: env[k] for k in PANE_PASSTHROUGH if k in env})
        return cls(
            profile=load_profile(env.get("AGENTVISOR_PROFILE", "claude"), env),
            socket_path=env.get("AGENTVISOR_SOCKET", DEFAULT_SOCKET),
            token_file=env.get("AGENTVISOR_TOKEN_FILE", DEFAULT_TOKEN_FILE),
            workdir=env.get("AGENTVISOR_WORKDIR", "/workspace"),
            tmux_socket=env.get("AGENTVISOR_TMUX_SOCKET") or None,
            journal_path=Path(journal),
            screens_path=default_screens_path(env),
            heartbeat_interval_s=_seconds(env, "AGENTVISOR_SHIM_HEARTBEAT_S", 5.0),
            lease_wait_s=_seconds(env, "AGENTVISOR_SHIM_LEASE_WAIT_S", 25.0),
            ready_timeout_s=_seconds(env, "AGENTVISOR_SHIM_READY_TIMEOUT_S", 120.0),
            verify_timeout_s=_seconds(env, "AGENTVISOR_SHIM_VERIFY_TIMEOUT_S", 15.0),
            tmux_server_wait_s=_seconds(env, "AGENTVISOR_SHIM_TMUX_WAIT_S", 10.0),
            crash_after_type=env.get("AGENTVISOR_SHIM_CRASH_AFTER_TYPE") or None,
            pane_env=pane_env,
            hook_receipts_path=Path(env.get("AGENTVISOR_HOOK_RECEIPTS") or DEFAULT_RECEIPTS),
            channel_port=_port(env, "AGENTVISOR_CHANNEL_PORT", 7399),
            egress_port=_port(env, "AGENTVISOR_EGRESS_PORT", 7398),
            role=env.get("AGENTVISOR_ROLE") or None,
            publish_remote=env.get("AGENTVISOR_SHIM_PUBLISH_REMOTE") or "origin",
        )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) > 65535:
        raise ConfigError(f"{name} must be a TCP port (0 to turn it off), not {raw!r}")
    return int(raw)
