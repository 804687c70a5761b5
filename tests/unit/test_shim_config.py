"""The daemon's settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_shim.config import ConfigError, ShimConfig


def test_defaults_follow_the_contract():
    config = ShimConfig.from_env({"HOME": "/home/agent"})
    assert config.socket_path == "/run/agentvisor/sock/api.sock"
    assert config.token_file == "/run/agentvisor/token"
    assert config.profile.name == "claude"
    assert config.workdir == "/workspace"
    assert config.tmux_socket is None
    assert config.journal_path == Path("/home/agent/.local/state/agentvisor-shim/delivered")
    assert config.crash_after_type is None


def test_the_pane_gets_agentvisor_variables_but_not_the_shims_own():
    config = ShimConfig.from_env(
        {
            "HOME": "/home/agent",
            "PATH": "/usr/bin",
            "SECRET": "x",
            "AGENTVISOR_SOCKET": "/s",
            "AGENTVISOR_ROLE": "dev",
            "AGENTVISOR_SHIM_CRASH_AFTER_TYPE": "1",
        }
    )
    assert config.pane_env == {
        "AGENTVISOR_SOCKET": "/s",
        "AGENTVISOR_ROLE": "dev",
        "HOME": "/home/agent",
        "PATH": "/usr/bin",
    }
    assert config.crash_after_type == "1"


def test_timings_are_numbers_of_seconds():
    config = ShimConfig.from_env({"AGENTVISOR_SHIM_HEARTBEAT_S": "0.5"})
    assert config.heartbeat_interval_s == 0.5
    with pytest.raises(ConfigError, match="AGENTVISOR_SHIM_LEASE_WAIT_S must be a number"):
        ShimConfig.from_env({"AGENTVISOR_SHIM_LEASE_WAIT_S": "soon"})


def test_the_channel_port_defaults_to_7399_and_0_turns_it_off():
    assert ShimConfig.from_env({"HOME": "/h"}).channel_port == 7399
    assert ShimConfig.from_env({"HOME": "/h", "AGENTVISOR_CHANNEL_PORT": "0"}).channel_port == 0
    config = ShimConfig.from_env({"HOME": "/h", "AGENTVISOR_ROLE": "dev"})
    assert config.role == "dev"
    assert config.publish_remote == "origin"


@pytest.mark.parametrize("raw", ["-1", "65536", "x", "7399 "])
def test_a_channel_port_that_is_not_a_port_is_refused(raw):
    with pytest.raises(ConfigError, match="AGENTVISOR_CHANNEL_PORT"):
        ShimConfig.from_env({"HOME": "/h", "AGENTVISOR_CHANNEL_PORT": raw})
