"""The project's refs and git dirs read from its files with GitPython (agentvisor.git.refs): the
same answers as git's, and nothing inherited can point them at another repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentvisor.git import git_run, refs
from agentvisor.git.project_repo import find_project, start_branch
from tests.helpers import git, make_repo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj", "# p\n")


def _tip(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", ref).strip()


def test_branch_tips_match_git_for_loose_packed_and_symbolic_branches(repo: Path) -> None:
    git(repo, "branch", "agent/dev")
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    git(repo, "pack-refs", "--all")
    git(repo, "commit", "-q", "--allow-empty", "-m", "third")  # main loose again, newer
    git(repo, "symbolic-ref", "refs/heads/alias", "refs/heads/main")

    assert refs.branch_tip(repo, "main") == _tip(repo, "main")
    assert refs.branch_tip(repo, "agent/dev") == _tip(repo, "agent/dev")
    assert refs.branch_tip(repo, "alias") == _tip(repo, "main")
    assert refs.branch_tip(repo, "missing") is None
    assert not refs.branch_exists(repo, "agent")


@pytest.mark.parametrize("name", ["../../HEAD", "../config", "a..b", "x.lock", "with space", ""])
def test_a_branch_name_git_would_refuse_reads_as_missing(repo: Path, name: str) -> None:
    assert refs.branch_tip(repo, name) is None


def test_head_branch_of_an_unborn_a_detached_and_a_checked_out_head(repo: Path) -> None:
    assert start_branch(repo) == "main"
    git(repo, "switch", "-q", "--orphan", "fresh")
    assert refs.head_branch(repo) == "fresh"
    git(repo, "switch", "-q", "--detach", "main")
    assert refs.head_branch(repo) is None


def test_git_dirs_of_a_linked_worktree(repo: Path, tmp_path: Path) -> None:
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "side", str(linked))
    (repo / ".git" / "worktrees" / "linked" / "MERGE_HEAD").write_text(_tip(repo, "main"))

    assert refs.git_common_dir(linked) == repo / ".git"
    assert refs.operation_in_progress(linked) == "MERGE_HEAD"
    assert refs.operation_in_progress(repo) is None
    assert refs.head_branch(linked) == "side"


def test_inherited_git_location_variables_cannot_swap_the_repository_read(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = make_repo(tmp_path / "theirs", "# theirs\n")
    git(theirs, "commit", "-q", "--allow-empty", "-m", "forged")
    ours = _tip(repo, "main")
    assert ours != _tip(theirs, "main")
    inherited = {
        "GIT_DIR": str(theirs / ".git"),
        "GIT_WORK_TREE": str(theirs),
        "GIT_COMMON_DIR": str(theirs / ".git"),
        "GIT_OBJECT_DIRECTORY": str(theirs / ".git" / "objects"),
    }
    for key, value in inherited.items():
        monkeypatch.setenv(key, value)

    assert find_project(repo / "spec.md") == repo
    assert refs.branch_tip(repo, "main") == ours
    assert start_branch(repo) == "main"
    assert refs.git_common_dir(repo) == repo / ".git"
    assert {key: os.environ.get(key) for key in inherited} == inherited  # put back afterwards


def test_a_repository_with_reftable_refs_is_read_by_git_instead(repo: Path) -> None:
    """GitPython reads only files refs; with another ref storage the runner answers (this
    repository's format version 0 makes git ignore the setting, so its answers stay true)."""
    git(repo, "config", "--local", "extensions.refStorage", "reftable")

    assert refs.branch_tip(repo, "main") == _tip(repo, "main")
    assert refs.head_branch(repo) == "main"


def test_git_version_is_read_once_as_numbers() -> None:
    git_run.git_version.cache_clear()
    version = git_run.git_version()
    assert len(version) >= 2 and version >= (2, 0)
