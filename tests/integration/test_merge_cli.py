"""`agentvisor merge` as the operator runs it, against a real server and real git repos: its
exit status tells a script whether everything merged, `--pr` asks for `gh` before touching
anything, and `--into` takes only the integration or the start branch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentvisor.git.merging import INTEGRATION_BRANCH
from agentvisor.git.worktrees import ensure_worktree
from tests.conftest import ServerProcess
from tests.helpers import git, make_repo


@pytest.fixture
def repo(server: ServerProcess, short_tmp: Path) -> Path:
    """Project `demo` with agents dev and qa, whose branches both change README.md."""
    root = make_repo(short_tmp / "demo", "# Demo\n\nA spec for the merge command's tests.\n")
    server.ensure_project("demo", str(root))
    for role in ("dev", "qa"):
        ensure_worktree(root, role, "main")
        git(root, "switch", "-q", f"agent/{role}")
        (root / "README.md").write_text(f"written by {role}\n")
        git(root, "add", "README.md")
        git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", role)
        git(root, "switch", "-q", "main")
    return root


def merge(server: ServerProcess, *args: str, path: str | None = None):
    env = None if path is None else {"PATH": path, "HOME": "/nonexistent"}
    return subprocess.run(
        [sys.executable, "-m", "agentvisor", "--state", str(server.state_dir), "merge", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_merge_exits_1_when_a_branch_conflicts_and_still_lists_every_branch(
    server: ServerProcess, repo: Path
):
    done = merge(server, "demo")
    assert done.returncode == 1, done.stderr
    assert "agent/dev" in done.stdout and "agent/qa" in done.stdout
    assert "merged" in done.stdout and "conflict" in done.stdout
    assert "1 branch(es) conflict and were left out: agent/qa" in done.stderr
    assert "Traceback" not in done.stderr
    # The clean one is merged all the same.
    assert git(repo, "show", f"{INTEGRATION_BRANCH}:README.md").strip() == "written by dev"


def test_merge_pr_without_gh_refuses_before_merging_anything(server: ServerProcess, repo: Path):
    bare = str(Path(sys.executable).parent) + ":/usr/bin:/bin"  # git, but no gh
    assert subprocess.run(["sh", "-c", "command -v gh"], env={"PATH": bare}).returncode != 0
    done = merge(server, "demo", "--pr", path=bare)
    assert done.returncode != 0
    assert "--pr needs the GitHub CLI 'gh'" in done.stderr and "nothing was merged" in done.stderr
    assert git(repo, "branch", "--list", INTEGRATION_BRANCH) == ""


def test_merge_into_another_branch_is_refused_and_creates_nothing(
    server: ServerProcess, repo: Path
):
    done = merge(server, "demo", "--into", "feature-x")
    assert done.returncode != 0
    assert "refusing to merge into a new branch feature-x" in done.stderr
    assert git(repo, "branch", "--list", "feature-x") == ""
    assert git(repo, "branch", "--list", INTEGRATION_BRANCH) == ""
