"""`python3 -m agent_shim`: the daemon supervisord runs beside the agent's tmux server."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from agent_shim import claude_setup
from agent_shim.channel import Relay
from agent_shim.client import ApiClient
from agent_shim.config import ConfigError, ShimConfig
from agent_shim.git_publish import GitBranch, Publisher
from agent_shim.history import SavedScreens
from agent_shim.journal import DeliveryJournal
from agent_shim.profiles import ProfileError
from agent_shim.receipts import Receipts
from agent_shim.session import AgentSession
from agent_shim.shim import Shim
from agent_shim.tmux_control import ControlledServer


def tmux_server(socket: str | None, session_name: str) -> ControlledServer:
    """tmux's default server, or `-S PATH` when `socket` is a path, else `-L NAME`; its
    frequent commands over a control connection to the agent's session."""
    if not socket:
        return ControlledServer(session_name=session_name)
    if "/" in socket:
        return ControlledServer(socket_path=socket, session_name=session_name)
    return ControlledServer(socket_name=socket, session_name=session_name)


def shim_clock(env: dict[str, str] | os._Environ[str] = os.environ) -> Callable[[], float]:
    """The shim's clock: the system's, or (tests only) shifted by the seconds written in the
    file AGENTVISOR_CLOCK_OFFSET_FILE names, the same file that moves the server's clock."""
    path = env.get("AGENTVISOR_CLOCK_OFFSET_FILE")
    if not path:
        return time.time

    def now() -> float:
        try:
            with open(path, encoding="utf-8") as file:
                return time.time() + float(file.read().strip() or 0)
        except (OSError, ValueError):
            return time.time()

    return now


def main() -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s agent_shim %(levelname)s %(message)s",
    )
    log = logging.getLogger("agent_shim")
    try:
        config = ShimConfig.from_env()
    except (ConfigError, ProfileError) as error:
        log.error("%s", error)
        return 2
    resume = os.environ.get("AGENTVISOR_RESUME") == "1"
    pane_env = {**config.pane_env, **model_stand_in(config, os.environ, log)}
    if config.profile.name == "claude":
        resume = prepare_claude(config, log, resume, {**os.environ, **pane_env})
    server = tmux_server(config.tmux_socket, config.session_name)
    session = AgentSession(
        server,
        config.profile,
        config.workdir,
        pane_env,
        name=config.session_name,
        resume_at_start=resume,
        screens=SavedScreens(config.screens_path),
    )
    shim = Shim(
        config,
        ApiClient(config.socket_path, config.token_file),
        session,
        DeliveryJournal(config.journal_path),
        clock=shim_clock(),
        receipts=Receipts(config.hook_receipts_path) if config.profile.turn_hooks else None,
    )
    shim.install_signal_handlers()
    log.info(
        "starting: profile %s, tmux %s, API %s",
        config.profile.name,
        config.tmux_socket or "default socket",
        config.socket_path,
    )
    stop = threading.Event()
    relays: list[Relay] = []

    def start_relays() -> None:
        # Beside the shim's own start, which brings the first heartbeat: nothing waits on git.
        for running in (start_channel(config, log, stop), start_egress(config, log)):
            if running is not None:
                relays.append(running)

    starter = threading.Thread(target=start_relays, name="relays", daemon=True)
    starter.start()
    try:
        return shim.run()
    finally:
        stop.set()
        starter.join(timeout=5)
        for running in relays:
            running.stop()


# Downloads go through here: bigger buffers than the git channel's (at most 32 x 2 x 256 KiB).
EGRESS_MAX_CONNECTIONS = 32
EGRESS_BUFFER_BYTES = 256 * 1024


def start_egress(config: ShimConfig, log: logging.Logger) -> Relay | None:
    """The way out to the web: 127.0.0.1:PORT relayed to the host's egress proxy, which
    decides (the sandbox has no network of its own: docs/guides/network.md)."""
    if config.egress_port == 0:
        log.info("egress off (AGENTVISOR_EGRESS_PORT=0)")
        return None
    relay = Relay(
        config.egress_socket_path,
        config.egress_port,
        name="egress",
        max_connections=EGRESS_MAX_CONNECTIONS,
        buffer_bytes=EGRESS_BUFFER_BYTES,
        splice=True,
    )
    relay.start()
    return relay


def start_channel(config: ShimConfig, log: logging.Logger, stop: threading.Event) -> Relay | None:
    """The channel to the host (127.0.0.1:PORT relayed to the API socket) and the publisher
    that pushes the agent's branch over it; neither without a port or a git repository."""
    if config.channel_port == 0:
        log.info("channel off (AGENTVISOR_CHANNEL_PORT=0): the branch is not published")
        return None
    if not os.path.exists(os.path.join(config.workdir, ".git")):
        log.info("%s is not a git repository: no channel, nothing to publish", config.workdir)
        return None
    relay = Relay(config.socket_path, config.channel_port)
    relay.start()
    if not config.role:
        log.warning("AGENTVISOR_ROLE is not set: the agent's branch is not published")
        return relay
    try:
        branch = GitBranch(
            config.workdir,
            config.role,
            remote=config.publish_remote,
            channel_url=f"http://127.0.0.1:{config.channel_port}/",
            token_file=config.token_file,
        )
    except ValueError as error:
        log.warning("the agent's branch is not published: %s", error)
        return relay
    if branch.git_dir is None:
        log.warning("git does not take %s as a repository: nothing published", config.workdir)
        return relay
    relay.wait_bound(2.0)  # the first push finds the channel open
    Publisher(branch).start(stop)
    return relay


def model_stand_in(
    config: ShimConfig, env: Mapping[str, str], log: logging.Logger
) -> dict[str, str]:
    """The agent CLI's stand-in API key: its own token, which the host's model broker (behind
    ANTHROPIC_BASE_URL) exchanges for the real credential. Useless anywhere else."""
    if env.get("AGENTVISOR_MODEL_BROKER") != "1":
        return {}
    try:
        token = Path(config.token_file).read_text(encoding="utf-8").strip()
    except OSError as error:
        log.error(
            "no stand-in key for the model broker: %s unreadable (%s)", config.token_file, error
        )
        return {}
    return {"ANTHROPIC_API_KEY": token} if token else {}


def prepare_claude(
    config: ShimConfig, log: logging.Logger, resume: bool, env: Mapping[str, str]
) -> bool:
    """Seed Claude Code's files in HOME; whether to start by resuming its conversation."""
    home = Path(env.get("HOME") or Path.home())
    try:
        setup = claude_setup.prepare(config.profile, env, home)
    except OSError as error:
        # Claude Code then shows its first-run dialogs; the shim keeps serving the pane.
        log.error("cannot prepare Claude Code's files in %s: %s", home, error)
        return resume
    for path in setup.written:
        log.info("prepared %s", path)
    if setup.session_id:
        log.info(
            "Claude Code session %s: %s",
            setup.session_id,
            "resuming it" if setup.resume else "new",
        )
    return setup.resume


if __name__ == "__main__":
    sys.exit(main())
