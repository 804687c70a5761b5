"""The command line's own conventions, without a server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from agentvisor import __version__, cli


def test_version_alone_prints_the_version_and_exits_0():
    done = subprocess.run(
        [sys.executable, "-m", "agentvisor", "--version"], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout.strip()) == (0, __version__), done.stderr


def test_repeated_roles_add_up(tmp_path: Path):
    spec = tmp_path / "spec.md"
    spec.write_text("# Tool\n\nBuild a small tool that renames photos by their date.\n")
    result = CliRunner().invoke(
        cli.app,
        ["plan", str(spec), "--roles", "developer", "--roles", "tester,docs", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["roles"] == ["orchestrator", "developer", "tester", "docs"]
