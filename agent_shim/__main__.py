"""`python3 -m agent_shim`: the daemon supervisord runs beside the agent's tmux server."""

from __future__ import annotations

import logging
import sys

import libtmux

from agent_shim.client import ApiClient
from agent_shim.config import ConfigError, ShimConfig
from agent_shim.journal import DeliveryJournal
from agent_shim.profiles import ProfileError
from agent_shim.session import AgentSession
from agent_shim.shim import Shim


def tmux_server(socket: str | None) -> libtmux.Server:
    """tmux's default server, or `-S PATH` when `socket` is a path, else `-L NAME`."""
    if not socket:
        return libtmux.Server()
    if "/" in socket:
        return libtmux.Server(socket_path=socket)
    return libtmux.Server(socket_name=socket)


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
    server = tmux_server(config.tmux_socket)
    session = AgentSession(
        server, config.profile, config.workdir, config.pane_env, name=config.session_name
    )
    shim = Shim(
        config,
        ApiClient(config.socket_path, config.token_file),
        session,
        DeliveryJournal(config.journal_path),
    )
    shim.install_signal_handlers()
    log.info(
        "starting: profile %s, tmux %s, API %s",
        config.profile.name,
        config.tmux_socket or "default socket",
        config.socket_path,
    )
    return shim.run()


if __name__ == "__main__":
    sys.exit(main())
