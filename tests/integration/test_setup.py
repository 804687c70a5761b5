"""scripts/setup.sh, as `make setup` runs it: what the README's commands need in a new shell."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _setup(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh")],
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(bin_dir.parent),
            "AGENTVISOR_BIN_DIR": str(bin_dir),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_setup_puts_agentvisor_on_the_path_of_a_new_shell(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    done = _setup(bin_dir)
    assert done.returncode == 0, done.stderr
    assert (bin_dir / "agentvisor").resolve() == (REPO / ".venv" / "bin" / "agentvisor").resolve()
    # Not on the PATH it ran with: it says how to add it.
    assert f'export PATH="{bin_dir}:$PATH"' in done.stderr
    shell = subprocess.run(
        ["bash", "-c", "cd / && agentvisor --help"],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 0, shell.stderr
    assert "run teams of AI coding agents" in shell.stdout
    # Run again: nothing to change, nothing said about the link.
    again = _setup(bin_dir)
    assert again.returncode == 0 and "linked" not in again.stderr


def test_setup_leaves_a_file_of_the_same_name_alone(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "agentvisor").write_text("#!/bin/sh\necho mine\n")
    done = _setup(bin_dir)
    assert done.returncode == 0, done.stderr
    assert "a file of that name is there" in done.stderr
    assert (bin_dir / "agentvisor").read_text() == "#!/bin/sh\necho mine\n"
