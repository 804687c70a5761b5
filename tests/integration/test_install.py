"""agentvisor installs beside PyPI's `supervisor` (supervisord), which owns the top-level import
name `supervisor`: ours is `agentvisor`, so both import from one environment, and uninstalling
agentvisor leaves every file of supervisord's in place (issue #16 point 1)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

SUPERVISORD = "supervisor==4.3.0"


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def _supervisord_files(venv: Path) -> list[Path]:
    shown = _run(venv / "bin" / "pip", "show", "--files", "supervisor")
    location = Path(
        next(line for line in shown.splitlines() if line.startswith("Location:"))[9:].strip()
    )
    listed = shown.split("Files:", 1)[1].split()
    return [location / name for name in listed if not name.endswith(".pyc")]


def test_agentvisor_and_supervisord_share_an_environment_and_uninstall_apart(tmp_path: Path):
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist, REPO)
    wheel = next(dist.glob("agentvisor-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert tops == {"agentvisor", "agent_shim", "agentvisor-0.1.0.dist-info"}, tops
    # The package data: the role briefings and the dashboard's page.
    assert "agentvisor/core/briefings/developer.md" in names
    assert "agentvisor/server/dashboard/static/dashboard.html" in names
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    pip, python = venv / "bin" / "pip", venv / "bin" / "python"
    # supervisord first, then agentvisor into the same site-packages (no dependencies: only
    # the files of the two distributions matter here).
    _run(pip, "install", "--quiet", "--no-deps", SUPERVISORD)
    _run(pip, "install", "--quiet", "--no-deps", wheel)
    both = _run(python, "-c", "import agentvisor, supervisor.supervisord, supervisor.options; "
                "print(agentvisor.__file__); print(supervisor.__file__)")  # fmt: skip
    ours, theirs = both.split()
    assert "/site-packages/agentvisor/" in ours and "/site-packages/supervisor/" in theirs
    files = _supervisord_files(venv)
    assert files and all(f.exists() for f in files)
    # Nothing of ours in supervisord's folder, nothing of theirs in ours.
    installed = Path(theirs).parent
    assert not (installed / "cli").exists() and not (installed / "launch.py").exists()

    _run(pip, "uninstall", "--yes", "--quiet", "agentvisor")
    assert [f for f in files if not f.exists()] == []
    assert _run(venv / "bin" / "supervisord", "--version").strip() == "4.3.0"
    gone = subprocess.run([python, "-c", "import agentvisor"], capture_output=True, text=True)
    assert gone.returncode != 0 and "No module named 'agentvisor'" in gone.stderr
