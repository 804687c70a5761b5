"""`agentvisor service`: the unit it writes passes `systemd-analyze verify`, and the commands
say what they did on a host without a running systemd (this one, and CI)."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from agentvisor import cli
from agentvisor.cli import systemd_unit
from agentvisor.config import Settings
from tests.conftest import require


def test_the_unit_runs_serve_on_the_state_dir_restarts_on_failure_and_logs():
    settings = Settings(state_dir=Path("/srv/agent visor/state"))
    text = systemd_unit.render_unit(
        settings, python="/opt/av/bin/python", user_mode=False, run_as="alice", port=8377
    )
    assert (
        'ExecStart=/opt/av/bin/python -m agentvisor --state "/srv/agent visor/state" serve '
        "--port 8377"
    ) in text
    assert "User=alice" in text and "Restart=on-failure" in text
    assert "StandardOutput=append:/srv/agent visor/state/server.log" in text
    assert "WantedBy=multi-user.target" in text
    user = systemd_unit.render_unit(settings, python="/p", user_mode=True, run_as="alice")
    assert "User=" not in user and "WantedBy=default.target" in user
    assert "Wants=docker.service" not in user


def test_install_writes_a_unit_that_systemd_analyze_verifies_then_status_and_uninstall(
    tmp_path: Path,
):
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (make setup)")
    runner = CliRunner()
    base = ["--state", str(tmp_path / "state"), "service"]
    units = ["--unit-dir", str(tmp_path / "units")]
    written = runner.invoke(cli.app, [*base, "install", *units, "--no-enable"])
    assert written.exit_code == 0, written.output
    unit = tmp_path / "units" / "agentvisor.service"
    assert systemd_unit.verify(unit) is None
    assert str(tmp_path / "state") in unit.read_text()
    shown = runner.invoke(cli.app, [*base, "status", *units])
    assert shown.exit_code == 0 and "installed" in shown.output
    if not systemd_unit.systemd_running():  # here and in CI: one clear line, exit 1
        started = runner.invoke(cli.app, [*base, "install", *units])
        assert started.exit_code == 1
        assert "systemd is not running on this host" in str(started.exception)
    removed = runner.invoke(cli.app, [*base, "uninstall", *units])
    assert removed.exit_code == 0 and not unit.exists()
    gone = runner.invoke(cli.app, [*base, "status", *units])
    assert gone.exit_code == 3 and "not installed" in gone.output


def test_a_bad_unit_name_is_refused(tmp_path: Path):
    result = CliRunner().invoke(
        cli.app,
        ["--state", str(tmp_path), "service", "install", "--name", "a b", "--no-enable"],
    )
    assert result.exit_code != 0 and "unit name 'a b'" in str(result.exception)
