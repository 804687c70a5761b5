"""What the host reads of a repository with GitPython (discovery, git dirs, HEAD, branch tips:
agentvisor.git.refs), attacked with a repository whose every git setting runs a planted command.

The bait: a repository an agent can make in its own folder (or, worse than any real case, the
project's own .git) with every command setting git has, hooks, and a HEAD whose commit is
missing from a partial clone, so that any git that looks the commit up fetches it from the
promisor remote through the planted `core.sshCommand`. Stock GitPython's `head.is_valid()`
runs that command (the first test shows it); agentvisor's reads must run no git at all.
Real git, real repositories; the host is looked at afterwards: no marker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import git
import pytest

from agentvisor.errors import GitError
from agentvisor.git import refs
from agentvisor.git.project_repo import create_new_project, find_project, start_branch
from agentvisor.git.worktrees import ensure_worktree
from tests.helpers import git as sh
from tests.helpers import make_repo

REPO = Path(__file__).resolve().parents[2]
MISSING = "1" * 40
SPEC = """# Next

Build a small command line tool that prints the weather for a city, with tests.
"""
HOOKS = ("post-checkout", "reference-transaction", "post-index-change", "pre-auto-gc")


def plant(repo: Path, marker: Path) -> None:
    """Make every git in `repo` that looks up HEAD's commit, touches the index or runs a hook
    create `marker` (see the module)."""
    command = f"touch {marker}; :"
    hooks = repo / ".git" / "evil-hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    for name in HOOKS:
        (hooks / name).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (hooks / name).chmod(0o755)
    for key, value in {
        "core.repositoryformatversion": "1",
        "extensions.partialClone": "origin",
        "remote.origin.url": "ssh://agentvisor.invalid/planted.git",
        "remote.origin.promisor": "true",
        "remote.origin.uploadpack": command,
        "core.sshCommand": command,
        "core.fsmonitor": command,
        "core.hooksPath": str(hooks),
        "core.pager": command,
        "alias.worktree-list": f"!{command}",
        "protocol.allow": "always",
    }.items():
        sh(repo, "config", "--local", key, value)
    head = (repo / ".git" / "HEAD").read_text().strip().removeprefix("ref: ")
    (repo / ".git" / head).parent.mkdir(parents=True, exist_ok=True)
    (repo / ".git" / head).write_text(f"{MISSING}\n")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "planted-command-ran"


@pytest.fixture
def watch_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], Path]:
    """From the call on, every git process started in this process (GitPython's or the
    runner's) goes through a `git` first on PATH that notes it ran; the note's path."""

    def start() -> Path:
        real = shutil.which("git")
        assert real is not None
        folder = tmp_path / "spy-bin"
        folder.mkdir()
        note = tmp_path / "a-git-process-ran"
        (folder / "git").write_text(f'#!/bin/sh\necho "$*" >> {note}\nexec {real} "$@"\n')
        (folder / "git").chmod(0o755)
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        return note

    return start


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "shop", "# shop\n")


@pytest.fixture
def planted_in_agent_folder(project: Path, marker: Path) -> Path:
    """A repository the agent made in a folder of its worktree, a spec beside it: `plans/`."""
    clone = ensure_worktree(project, "developer", "main").path
    nested = clone / "plans"
    nested.mkdir()
    sh(nested, "init", "-q", "-b", "main")
    plant(nested, marker)
    (nested / "next.md").write_text(SPEC)
    return nested


def test_the_planted_repository_runs_its_command_under_stock_gitpython(
    planted_in_agent_folder: Path, marker: Path
):
    """The bait works: stock GitPython starts `git cat-file`, which fetches the missing commit
    through the planted ssh command (what `find_project` did before it used agentvisor.git.refs)."""
    assert not git.Repo(planted_in_agent_folder).head.is_valid()
    assert marker.exists(), "the planted repository is no bait: nothing ran"


DISCOVERIES: dict[str, Callable[[Path], object]] = {
    "spec-in-the-planted-repository": lambda nested: find_project(nested / "next.md"),
    "project-is-the-planted-repository": lambda nested: find_project(nested / "next.md", nested),
    "new-project-beside-it": lambda nested: create_new_project(nested / "next.md"),
    "spec-in-a-subfolder": lambda nested: find_project(_subfolder_spec(nested)),
}


def _subfolder_spec(nested: Path) -> Path:
    (nested / "deep").mkdir()
    (nested / "deep" / "spec.md").write_text("# deeper\n")
    return nested / "deep" / "spec.md"


@pytest.mark.parametrize("how", DISCOVERIES)
def test_a_spec_in_a_repository_an_agent_planted_in_its_folder_runs_nothing_on_discovery(
    planted_in_agent_folder: Path, marker: Path, watch_git: Callable[[], Path], how: str
):
    spawned = watch_git()
    with pytest.raises(GitError, match="agent's worktree of"):
        DISCOVERIES[how](planted_in_agent_folder)
    assert not marker.exists(), "the agent's planted command ran on the host"
    assert not spawned.exists(), f"git ran on the agent's repository: {spawned.read_text()}"


def test_a_worktree_setting_in_the_agents_clone_does_not_lead_discovery_out_of_it(
    project: Path, marker: Path, watch_git: Callable[[], Path], tmp_path: Path
):
    """core.worktree in the clone's config names a folder outside `-worktrees` (git would take
    it for the top folder): discovery is refused all the same, before the config is read."""
    clone = ensure_worktree(project, "developer", "main").path
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    plant(clone, marker)
    sh(clone, "config", "--local", "core.worktree", str(elsewhere))
    (clone / "spec.md").write_text("# spec\n")
    spawned = watch_git()
    with pytest.raises(GitError, match="agent's worktree of"):
        find_project(clone / "spec.md")
    assert not marker.exists() and not spawned.exists()


def test_agentvisor_plan_of_a_spec_in_a_planted_repository_runs_nothing(
    planted_in_agent_folder: Path, marker: Path, tmp_path: Path
):
    """The operator's own command, as a process of its own: `agentvisor plan SPEC` names no
    project for it and runs nothing of the agent's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "AGENTVISOR_"))}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=f"{REPO / 'supervisor'}{os.pathsep}{REPO}")
    done = subprocess.run(
        [sys.executable, "-m", "agentvisor", "--state", str(tmp_path / "state"), "plan",
         str(planted_in_agent_folder / "next.md")],
        cwd=planted_in_agent_folder, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert "agent's worktree of" in done.stdout + done.stderr, done.stdout + done.stderr
    assert not marker.exists(), "the agent's planted command ran on the host"


def test_planted_commands_in_the_projects_own_config_never_run_while_the_host_reads_refs(
    project: Path, marker: Path, watch_git: Callable[[], Path]
):
    """Worse than any real case (agents cannot write the project's .git): the project's own
    config plants everything, and a branch names a commit that is missing. Discovery, the
    start branch, branch tips, git dirs and the unfinished-operation check start no git."""
    sh(project, "branch", "agent/developer")
    tip = sh(project, "rev-parse", "HEAD").strip()
    plant(project, marker)
    (project / ".git" / "HEAD").write_text("ref: refs/heads/agent/developer\n")
    (project / ".git" / "refs" / "heads" / "agent" / "developer").write_text(f"{tip}\n")
    (project / ".git" / "refs" / "heads" / "main").write_text(f"{MISSING}\n")
    spawned = watch_git()

    assert find_project(project / "spec.md") == project
    assert start_branch(project) == "agent/developer"
    assert refs.branch_tip(project, "main") == MISSING  # read as data, never looked up
    assert refs.branch_exists(project, "agent/developer")
    assert refs.git_common_dir(project) == project / ".git"
    assert refs.operation_in_progress(project) is None
    assert not marker.exists(), "a planted command ran on the host"
    assert not spawned.exists(), f"git ran while reading refs: {spawned.read_text()}"


def test_gitpython_object_lookups_in_a_planted_repository_fail_instead_of_running_git(
    planted_in_agent_folder: Path, marker: Path, watch_git: Callable[[], Path]
):
    """The guard behind agentvisor.git.refs: whatever GitPython would run git for (an object,
    `repo.git.*`) is refused, so a later change cannot run git there by accident."""
    spawned = watch_git()
    repo = refs.open_repo(planted_in_agent_folder)
    with pytest.raises(GitError, match="outside agentvisor's hardened runner"):
        _ = repo.head.commit
    with pytest.raises(GitError, match="outside agentvisor's hardened runner"):
        repo.git.status()
    assert not marker.exists() and not spawned.exists()
