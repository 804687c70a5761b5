"""The newcomer's path, as the README gives it, from a fresh copy of this repository: `make
setup` (the venv, `agentvisor` linked onto a folder it names), then `make up SPEC=... ARGS=
"--model scripted ..."` (the dry run: the real Claude Code against the scripted model, no key
and no login), then the tour's commands in a new shell that only took the PATH line setup
printed: the briefing is answered, `status` says the project runs, `down` stops it.

Slow by nature (setup installs the venv: about a minute, from pip's cache), so it is the one
test of the whole path; tests/integration/test_dry_run.py and test_setup.py prove the parts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agentvisor.config import Settings
from tests.conftest import CLAUDE_TEST_IMAGE, REPO
from tests.helpers import make_repo, name_suffix, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SPEC = """# Word counter

Build a command-line tool that counts the words of a text file, with tests and a README.
"""
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _fresh_copy(target: Path) -> Path:
    """What a clone of this checkout holds: its tracked files and new ones not ignored, as
    they are in the working tree (so an uncommitted change is tested too), nothing built."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _pip_cache() -> str:
    found = subprocess.run(
        [str(REPO / ".venv" / "bin" / "pip"), "cache", "dir"], capture_output=True, text=True
    )
    return found.stdout.strip() or str(Path.home() / ".cache" / "pip")


def test_from_a_fresh_clone_the_readmes_commands_run_the_dry_run_with_the_real_claude_code(
    short_tmp: Path, dry_run_host: Settings
):
    # dry_run_host: the Claude test image is built, no key or login, HOME is a new one.
    home = Path(os.environ["HOME"])
    checkout = _fresh_copy(short_tmp / "agentvisor")
    suffix = name_suffix(short_tmp)
    project = make_repo(short_tmp / "code" / f"wc-{suffix}", SPEC)
    env = {
        **os.environ,
        "PATH": SYSTEM_PATH,
        "PIP_CACHE_DIR": _pip_cache(),  # the packages setup installs, without a download
        # Where the link goes (root's default is /usr/local/bin, not the test's to touch) and
        # the image the test suite built (the user's default is agentvisor/sandbox:latest).
        "AGENTVISOR_BIN_DIR": str(home / ".local" / "bin"),
        "AGENTVISOR_IMAGE": CLAUDE_TEST_IMAGE,
        "AGENTVISOR_MEMORY_MB": "1536",
    }

    def run(command: str, cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    setup = run("make setup", checkout, timeout_s=900)
    assert setup.returncode == 0, setup.stderr[-3000:]
    path_line = re.search(r'export PATH="[^"]+"', setup.stderr)
    assert path_line, setup.stderr[-2000:]  # the new folder is not on PATH yet: it says how
    shell = path_line.group(0)
    try:
        up = run(
            f"make up SPEC={project}/spec.md "
            "ARGS='--model scripted --roles orchestrator,developer'",
            checkout,
        )
        assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
        assert f"project 'wc-{suffix}' is up" in up.stdout, up.stdout[-2000:]

        # A new shell: the PATH line setup printed, then the README's tour from the project.
        plan = run(f"{shell}; agentvisor plan spec.md", project)
        assert plan.returncode == 0 and f"project: wc-{suffix}" in plan.stdout, plan.stdout

        def answered() -> bool:
            logs = run(f"{shell}; agentvisor logs developer --lines 0", project)
            return "I am the developer of this dry run" in " ".join(logs.stdout.split())

        wait_until(answered, timeout_s=90, interval_s=2, message="the briefing answered")
        status = run(f"{shell}; agentvisor status", project)
        assert status.returncode == 0, status.stderr
        assert f"wc-{suffix} (running)" in status.stdout or "(complete)" in status.stdout
        down = run(f"{shell}; agentvisor down", project)
        assert down.returncode == 0 and "stopped 2 sandbox" in down.stdout, down.stdout
    finally:
        run(f"{shell}; agentvisor destroy wc-{suffix} --yes; agentvisor stop-server", project)
