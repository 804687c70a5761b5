"""The built wheel: agentvisor installs beside PyPI's `supervisor` (supervisord), which owns the
top-level import name `supervisor`: ours is `agentvisor`, so both import from one environment,
and uninstalling agentvisor leaves every file of supervisord's in place (issue #16 point 1).
And installed from the wheel alone into a fresh venv, agentvisor builds its sandbox image from
the build files it ships and brings a demo team up and down (point 5)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, require
from tests.helpers import docker_answers, make_repo, name_suffix

pytestmark = pytest.mark.slow

SUPERVISORD = "supervisor==4.3.0"
SPEC = """# Word counter

Build a command-line tool that counts the words of a text file, with tests and a README.
"""
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Never pinned: the fresh venv's own installers, and what is being installed.
UNPINNED = frozenset({"agentvisor", "pip", "setuptools", "wheel"})


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    # Without PYTHONPATH: a venv must import what is installed in it, not this checkout.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist, REPO)
    return next(dist.glob("agentvisor-*.whl"))


def test_agentvisor_and_supervisord_share_an_environment_and_uninstall_apart(
    tmp_path: Path, wheel: Path
):
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert tops == {"agentvisor", "agent_shim", "agentvisor-0.1.0.dist-info"}, tops
    # The package data: the role briefings and the dashboard's page.
    assert "agentvisor/core/briefings/developer.md" in names
    assert "agentvisor/server/dashboard/static/dashboard.html" in names
    # The images' build files, and the shim the sandbox image copies.
    for name in ("base/build-base.sh", "sandbox/Dockerfile", "sandbox/entrypoint.sh",
                 "supervisor/Dockerfile", "supervisor/healthcheck.py"):  # fmt: skip
        assert f"agentvisor/images/{name}" in names, name
    assert {"agent_shim/shim.py", "agent_shim/bin/agent"} <= names
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
    gone = subprocess.run([python, "-c", "import agentvisor"], capture_output=True, text=True,
                          cwd=tmp_path, env={"PATH": SYSTEM_PATH})  # fmt: skip
    assert gone.returncode != 0 and "No module named 'agentvisor'" in gone.stderr


def _constraints(path: Path) -> Path:
    """This environment's versions, so that the fresh venv gets what the suite tests with (and
    pip finds in its cache) and the image gets the same libtmux wheel."""
    pins = {
        dist.metadata["Name"].lower().replace("_", "-"): dist.version
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]
    }
    path.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items()) if n not in UNPINNED))
    return path


@pytest.fixture
def installed(short_tmp: Path, wheel: Path) -> Path:
    """A fresh venv holding agentvisor from the wheel with its dependencies, nothing else."""
    venv = short_tmp / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check",
         "--constraint", _constraints(short_tmp / "constraints.txt"), wheel)  # fmt: skip
    return venv


@pytest.fixture
def image_tag(short_tmp: Path) -> Iterator[str]:
    tag = f"agentvisor/sandbox:wheel-{name_suffix(short_tmp)}"
    yield tag
    import docker

    with contextlib.suppress(docker.errors.ImageNotFound):
        docker.from_env().images.remove(tag)  # only the tag when the suite's image is the same


def test_the_installed_wheel_builds_its_sandbox_image_and_runs_a_demo_team(
    short_tmp: Path, installed: Path, image_tag: str
):
    require(docker_answers(), "a Docker engine")
    suffix = name_suffix(short_tmp)
    project = make_repo(short_tmp / f"wc-{suffix}", SPEC)
    # Nothing of this checkout: no PYTHONPATH, no settings of the suite's, run from the project.
    env = {
        **{k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("AGENTVISOR_", "ANTHROPIC_"))},
        "PATH": f"{installed / 'bin'}:{SYSTEM_PATH}",
        "AGENTVISOR_STATE": str(short_tmp / "state"),
        "AGENTVISOR_DEMO_IMAGE": image_tag,
        "AGENTVISOR_MEMORY_MB": "512",
    }  # fmt: skip

    def agentvisor(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["agentvisor", *args], cwd=project, env=env, capture_output=True,
                              text=True, timeout=timeout_s)  # fmt: skip

    where = subprocess.run(
        ["python", "-c", "from agentvisor.sandbox import images; "
         "print(images.build_files()); print(images.agent_shim_dir())"],
        cwd=project, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    site = next((installed / "lib").glob("python3*/site-packages"))
    assert where.stdout.split() == [f"{site}/agentvisor/images", f"{site}/agent_shim"]

    # The suite's `make image-test` built the same context: Docker's cache makes this quick.
    built = agentvisor("image", "build", "--agent-clis", "none", "--tag", image_tag)
    assert built.returncode == 0, built.stderr[-3000:]
    assert built.stdout.split()[0] == image_tag, built.stdout
    try:
        up = agentvisor("up", "spec.md", "--agent", "demo", "--roles", "orchestrator,developer")
        assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
        assert f"project 'wc-{suffix}' is up" in up.stdout, up.stdout[-2000:]
        status = agentvisor("status")
        assert status.returncode == 0, status.stderr
        assert f"wc-{suffix} (running)" in status.stdout or "(complete)" in status.stdout
        down = agentvisor("down")
        assert down.returncode == 0 and "stopped 2 sandbox" in down.stdout, down.stdout
    finally:
        agentvisor("destroy", f"wc-{suffix}", "--yes")
        agentvisor("stop-server")
