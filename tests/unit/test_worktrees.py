"""Project discovery and the agents' own repositories, on real throwaway repositories."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agentvisor.errors import Conflict, GitError, InvalidInput, SpecError
from agentvisor.git.merging import sync_report
from agentvisor.git.project_repo import create_new_project, find_project, project_slug, start_branch
from agentvisor.git.worktrees import (
    CHANNEL_REMOTE_URL,
    Worktree,
    ensure_worktree,
    list_worktrees,
    remove_worktree,
    uncommitted_paths,
    worktrees_dir,
)
from tests.helpers import git, make_repo


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git identity from the environment and an empty global config: the real one is unread."""
    global_config = tmp_path / "global.gitconfig"
    global_config.touch()
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(global_config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Test Person")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "test@example.com")
    monkeypatch.chdir(tmp_path)
    return global_config


def sh(cwd: Path, *args: str) -> str:
    """git's output without its last newline, as these tests compare it."""
    return git(cwd, *args).removesuffix("\n")


def commit_file(cwd: Path, name: str, text: str, message: str) -> str:
    (cwd / name).write_text(text)
    sh(cwd, "add", name)
    sh(cwd, "commit", "--quiet", "-m", message)
    return sh(cwd, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj", files={"README.md": "hello\n"}, message="first")


# --- finding the project -----------------------------------------------------------------------


def test_find_project_returns_the_root_of_the_repository_holding_the_spec(repo: Path) -> None:
    (repo / "docs").mkdir()
    spec = repo / "docs" / "spec.md"
    spec.write_text("# build it\n")

    assert find_project(spec) == repo


def test_find_project_outside_any_repository_suggests_project_or_new_project(
    tmp_path: Path,
) -> None:
    spec = tmp_path / "loose" / "spec.md"
    spec.parent.mkdir()
    spec.write_text("# build it\n")

    with pytest.raises(GitError, match=r"--project DIR.*--new-project"):
        find_project(spec)


def test_find_project_with_a_folder_that_is_no_repository_says_git_init(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()

    with pytest.raises(GitError, match=r"`git init`.*--new-project"):
        find_project(tmp_path / "spec.md", project_dir=folder)


def test_find_project_with_a_subfolder_of_a_repository_names_its_root(repo: Path) -> None:
    (repo / "sub").mkdir()

    with pytest.raises(GitError, match=re.escape(f"--project {repo}")):
        find_project(repo / "spec.md", project_dir=repo / "sub")


def test_find_project_accepts_the_root_given_as_project_dir(repo: Path, tmp_path: Path) -> None:
    assert find_project(tmp_path / "elsewhere.md", project_dir=repo) == repo


def test_find_project_refuses_a_repository_without_commits(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    sh(empty, "init", "--quiet")

    with pytest.raises(GitError, match="no commits yet; commit something first"):
        find_project(empty / "spec.md", project_dir=empty)


def test_find_project_refuses_a_bare_repository(tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    bare.mkdir()
    sh(bare, "init", "--quiet", "--bare")

    with pytest.raises(GitError, match="bare repository"):
        find_project(tmp_path / "spec.md", project_dir=bare)


def test_find_project_in_an_agent_worktree_names_the_main_repository(repo: Path) -> None:
    worktree = ensure_worktree(repo, "dev", "main")
    spec = worktree.path / "spec.md"
    spec.write_text("# build it\n")

    with pytest.raises(GitError, match=re.escape(f"agent's worktree of {repo}")):
        find_project(spec)


# --- making a new project ----------------------------------------------------------------------


def test_create_new_project_makes_a_repository_beside_the_spec_repository(repo: Path) -> None:
    spec = repo / "notes" / "Todo App!.md"
    spec.parent.mkdir()
    spec.write_text("# a todo app\n")

    project = create_new_project(spec)

    assert project == repo.parent / "todo-app"
    assert (project / "spec.md").read_text() == "# a todo app\n"
    assert sh(project, "status", "--porcelain") == ""
    assert sh(project, "log", "--format=%s", "--", "spec.md").startswith("Add the spec")
    assert find_project(project / "spec.md") == project


def test_create_new_project_goes_beside_the_spec_folder_when_it_is_in_no_repository(
    tmp_path: Path,
) -> None:
    spec = tmp_path / "specs" / "shop.md"
    spec.parent.mkdir()
    spec.write_text("# a shop\n")

    assert create_new_project(spec) == tmp_path / "shop"


def test_create_new_project_refuses_an_existing_folder_without_force(tmp_path: Path) -> None:
    spec = tmp_path / "specs" / "shop.md"
    spec.parent.mkdir()
    spec.write_text("# a shop\n")
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "keep.txt").write_text("mine\n")

    with pytest.raises(Conflict, match=r"already exists.*--force"):
        create_new_project(spec)
    assert (tmp_path / "shop" / "keep.txt").read_text() == "mine\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".shop")] == []


def test_create_new_project_with_force_replaces_the_existing_folder(tmp_path: Path) -> None:
    spec = tmp_path / "specs" / "shop.md"
    spec.parent.mkdir()
    spec.write_text("# a shop\n")
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "keep.txt").write_text("old\n")

    project = create_new_project(spec, force=True)

    assert sorted(p.name for p in project.iterdir()) == [".git", "spec.md"]


def test_create_new_project_never_replaces_the_folder_holding_the_spec(tmp_path: Path) -> None:
    spec = tmp_path / "shop" / "shop.md"  # the new project would be tmp_path/shop itself
    spec.parent.mkdir()
    spec.write_text("# a shop\n")

    with pytest.raises(Conflict, match="holds"):
        create_new_project(spec, force=True)
    assert spec.read_text() == "# a shop\n"


def test_create_new_project_sets_a_local_identity_only_when_git_has_none(
    tmp_path: Path, isolated_git: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("NAME", "EMAIL"):
        monkeypatch.delenv(f"GIT_AUTHOR_{variable}")
        monkeypatch.delenv(f"GIT_COMMITTER_{variable}")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "one.md").write_text("# one\n")
    (tmp_path / "specs" / "two.md").write_text("# two\n")

    without = create_new_project(tmp_path / "specs" / "one.md")
    isolated_git.write_text("[user]\n\tname = Global Person\n\temail = global@example.com\n")
    with_global = create_new_project(tmp_path / "specs" / "two.md")

    assert sh(without, "config", "--local", "user.email") == "agentvisor@localhost"
    assert sh(without, "log", "-1", "--format=%an <%ae>") == "agentvisor <agentvisor@localhost>"
    assert "user." not in sh(with_global, "config", "--local", "--list")
    assert sh(with_global, "log", "-1", "--format=%an") == "Global Person"
    assert "agentvisor" not in isolated_git.read_text()


def test_create_new_project_needs_an_existing_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        create_new_project(tmp_path / "missing.md")


def test_project_slug_keeps_letters_and_digits_only() -> None:
    assert project_slug("My Café  App v2.md") == "my-cafe-app-v2"
    with pytest.raises(InvalidInput, match="rename"):
        project_slug("___.md")


# --- the start branch --------------------------------------------------------------------------


def test_start_branch_is_the_checked_out_branch(repo: Path) -> None:
    sh(repo, "switch", "--quiet", "-c", "feature")

    assert start_branch(repo) == "feature"


def test_start_branch_refuses_a_detached_head(repo: Path) -> None:
    sh(repo, "switch", "--quiet", "--detach", "HEAD")

    with pytest.raises(GitError, match="detached HEAD"):
        start_branch(repo)


# --- agent worktrees ---------------------------------------------------------------------------


def test_ensure_worktree_makes_a_sibling_folder_on_a_new_branch_from_the_start_branch(
    repo: Path,
) -> None:
    sh(repo, "switch", "--quiet", "-c", "release")
    tip = commit_file(repo, "release.txt", "r\n", "release work")
    sh(repo, "switch", "--quiet", "main")

    worktree = ensure_worktree(repo, "backend", "release")

    assert worktree == Worktree(repo.parent / "proj-worktrees" / "backend", "agent/backend", True)
    assert worktrees_dir(repo) == repo.parent / "proj-worktrees"
    assert sh(repo, "rev-parse", "agent/backend") == tip
    assert (worktree.path / "release.txt").exists()
    assert sh(worktree.path, "branch", "--show-current") == "agent/backend"


def test_an_agents_repository_is_a_clone_of_its_own_that_shares_nothing_with_the_project(
    repo: Path,
) -> None:
    worktree = ensure_worktree(repo, "dev", "main")

    git_dir = worktree.path / ".git"
    assert git_dir.is_dir() and not git_dir.is_symlink()
    assert Path(sh(worktree.path, "rev-parse", "--git-common-dir")) == Path(".git")
    assert not (git_dir / "objects" / "info" / "alternates").exists()
    assert not (git_dir / "commondir").exists()
    project_inodes = {p.stat().st_ino for p in (repo / ".git").rglob("*") if p.is_file()}
    clone_inodes = {p.stat().st_ino for p in git_dir.rglob("*") if p.is_file()}
    assert not project_inodes & clone_inodes, "no file is shared (hard links included)"
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert sh(worktree.path, "remote", "get-url", "origin") == CHANNEL_REMOTE_URL
    # Only the agent's branch and the start branch came along, nothing else of the project.
    assert sh(worktree.path, "for-each-ref", "--format=%(refname)").split() == [
        "refs/heads/agent/dev",
        "refs/remotes/origin/agent/dev",
        "refs/remotes/origin/main",
    ]
    assert not list((git_dir / "hooks").glob("*")) if (git_dir / "hooks").exists() else True


def test_a_clone_does_not_carry_the_operators_other_branches_or_their_objects(repo: Path) -> None:
    sh(repo, "switch", "--quiet", "-c", "private")
    secret = commit_file(repo, "secret.txt", "s\n", "operator only")
    sh(repo, "switch", "--quiet", "main")

    worktree = ensure_worktree(repo, "dev", "main")

    found = subprocess.run(
        ["git", "cat-file", "-e", secret], cwd=worktree.path, capture_output=True
    )
    assert found.returncode != 0


def test_ensure_worktree_a_second_time_returns_the_existing_one(repo: Path) -> None:
    first = ensure_worktree(repo, "dev", "main")
    (first.path / "scratch.txt").write_text("work in progress\n")

    second = ensure_worktree(repo, "dev", "main")

    assert (first.created, second.created) == (True, False)
    assert second.path == first.path
    assert (second.path / "scratch.txt").exists()


def test_ensure_worktree_reuses_an_existing_branch_without_resetting_it(repo: Path) -> None:
    sh(repo, "branch", "agent/dev")
    sh(repo, "switch", "--quiet", "agent/dev")
    ahead = commit_file(repo, "agent.txt", "a\n", "earlier agent work")
    sh(repo, "switch", "--quiet", "main")
    commit_file(repo, "main.txt", "m\n", "main moved on")

    worktree = ensure_worktree(repo, "dev", "main")

    assert worktree.created
    assert sh(repo, "rev-parse", "agent/dev") == ahead
    assert sh(worktree.path, "rev-parse", "HEAD") == ahead


def test_ensure_worktree_refuses_a_folder_that_is_not_a_worktree(repo: Path) -> None:
    stray = repo.parent / "proj-worktrees" / "dev"
    stray.mkdir(parents=True)

    with pytest.raises(GitError, match="exists but is not an agent's repository"):
        ensure_worktree(repo, "dev", "main")


def test_ensure_worktree_refuses_an_old_layout_worktree_and_says_to_migrate(repo: Path) -> None:
    old = repo.parent / "proj-worktrees" / "dev"
    old.parent.mkdir()
    sh(repo, "worktree", "add", "--quiet", "-b", "agent/dev", str(old))

    with pytest.raises(Conflict, match="agentvisor migrate"):
        ensure_worktree(repo, "dev", "main")


def test_ensure_worktree_makes_again_a_clone_whose_folder_was_deleted(repo: Path) -> None:
    first = ensure_worktree(repo, "dev", "main")
    commit_file(first.path, "kept.txt", "k\n", "committed work")
    sh(first.path, "push", "--quiet", f"file://{repo}", "agent/dev")  # as the channel would
    shutil.rmtree(first.path)

    again = ensure_worktree(repo, "dev", "main")

    assert again.created
    assert (again.path / "kept.txt").exists()


def test_ensure_worktree_rejects_a_role_that_cannot_name_a_folder(repo: Path) -> None:
    for role in ("../escape", "a/b", "", "-x", "x" * 65):
        with pytest.raises(InvalidInput, match="role"):
            ensure_worktree(repo, role, "main")


def test_ensure_worktree_refuses_a_missing_start_branch(repo: Path) -> None:
    with pytest.raises(GitError, match="start branch nope does not exist"):
        ensure_worktree(repo, "dev", "nope")


def test_a_commit_in_an_agents_clone_does_not_touch_the_project_until_published(
    repo: Path,
) -> None:
    worktree = ensure_worktree(repo, "dev", "main")
    before = sh(repo, "rev-parse", "agent/dev")

    commit_file(worktree.path, "feature.py", "print(1)\n", "add feature")

    assert sh(repo, "rev-parse", "agent/dev") == before
    assert sh(repo, "branch", "--show-current") == "main"
    assert not (repo / "feature.py").exists()


def test_list_worktrees_shows_the_agents_clones(repo: Path) -> None:
    ensure_worktree(repo, "qa", "main")
    ensure_worktree(repo, "dev", "main")
    (worktrees_dir(repo) / "notes").mkdir()  # not a repository: not an agent

    assert [(w.role, w.branch) for w in list_worktrees(repo)] == [
        ("dev", "agent/dev"),
        ("qa", "agent/qa"),
    ]


def test_remove_worktree_refuses_uncommitted_work_unless_forced(repo: Path) -> None:
    worktree = ensure_worktree(repo, "dev", "main")
    (worktree.path / "unsaved.txt").write_text("x\n")

    with pytest.raises(Conflict, match="1 uncommitted change"):
        remove_worktree(repo, "dev")
    assert remove_worktree(repo, "dev", force=True)

    assert not worktree.path.exists()
    assert list_worktrees(repo) == []
    assert sh(repo, "branch", "--list", "agent/dev") != ""
    assert not worktrees_dir(repo).exists()


def test_remove_worktree_refuses_commits_that_did_not_reach_the_project(repo: Path) -> None:
    worktree = ensure_worktree(repo, "dev", "main")
    commit_file(worktree.path, "f.txt", "f\n", "unpublished work")

    with pytest.raises(Conflict, match="did not reach the project"):
        remove_worktree(repo, "dev")
    assert remove_worktree(repo, "dev", delete_branch=True, force=True)
    assert not remove_worktree(repo, "dev", delete_branch=True)

    assert sh(repo, "branch", "--list", "agent/dev") == ""


def test_remove_worktree_leaves_a_folder_it_does_not_own_alone(repo: Path) -> None:
    stray = worktrees_dir(repo) / "dev"
    stray.mkdir(parents=True)

    with pytest.raises(GitError, match="leaves it alone"):
        remove_worktree(repo, "dev")
    assert stray.exists()


def _plant_everything(clone: Path, marker: Path) -> None:
    """What an agent can do to its own clone: git settings that run a command (included
    config too), hooks, attributes with a filter driver."""
    script = clone.parent / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\ncat\n")
    script.chmod(0o755)
    git_dir = clone / ".git"
    with (git_dir / "config").open("a") as config:
        config.write(
            f"[core]\n\tfsmonitor = {script}\n\thooksPath = {clone.parent}\n"
            f"\tsshCommand = {script}\n[diff]\n\texternal = {script}\n"
            f'[filter "x"]\n\tclean = {script}\n\tsmudge = {script}\n'
            f"[include]\n\tpath = {clone.parent / 'more.config'}\n"
        )
    (clone.parent / "more.config").write_text(f"[core]\n\tfsmonitor = {script}\n")
    (git_dir / "info").mkdir(exist_ok=True)
    (git_dir / "info" / "attributes").write_text("* filter=x diff=x\n")
    (clone / ".gitattributes").write_text("* filter=x\n")
    (git_dir / "hooks").mkdir(exist_ok=True)
    for hook in (
        "post-checkout",
        "post-merge",
        "pre-commit",
        "fsmonitor-watchman",
        "post-index-change",
    ):
        (git_dir / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (git_dir / "hooks" / hook).chmod(0o755)


def test_host_side_status_and_sync_never_run_what_the_agent_planted_in_its_clone(
    repo: Path, tmp_path: Path
) -> None:
    worktree = ensure_worktree(repo, "dev", "main")
    marker = tmp_path / "host-ran-agent-command"
    (worktree.path / "new.txt").write_text("n\n")
    (worktree.path / "README.md").write_text("changed\n")
    _plant_everything(worktree.path, marker)

    lines = uncommitted_paths(repo, worktree.path)
    row = sync_report(repo, "main", [worktree])[0]

    assert not marker.exists()
    assert "? new.txt" in lines and any(line.endswith(" README.md") for line in lines)
    assert (row.untracked, row.modified) == (2, 1)  # new.txt and .gitattributes; README.md
    assert row.checked_out == "agent/dev"
    # The planted settings do work for git run the ordinary way (here the agent's own).
    subprocess.run(["git", "status"], cwd=worktree.path, capture_output=True)
    assert marker.exists(), "the planted config is not effective: the test proves nothing"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_only_the_agents_clone_is_handed_to_the_sandbox_uid(repo: Path) -> None:
    owner = (repo / ".git").stat().st_uid

    worktree = ensure_worktree(repo, "dev", "main", owner=(64100, 64100))

    assert {p.lstat().st_uid for p in [worktree.path, *worktree.path.rglob("*")]} == {64100}
    assert {p.lstat().st_uid for p in [repo, *repo.rglob("*")]} == {owner}
    assert [w.role for w in list_worktrees(repo)] == ["dev"]
    assert uncommitted_paths(repo, worktree.path) == []
    assert ensure_worktree(repo, "qa", "main", owner=(64100, 64100)).created


def test_fifos_and_links_the_agent_plants_never_block_or_mislead_host_side_status(
    repo: Path,
) -> None:
    import time

    worktree = ensure_worktree(repo, "dev", "main")
    git_dir = worktree.path / ".git"
    (git_dir / "index").unlink()
    os.mkfifo(git_dir / "index")
    (git_dir / "objects" / "info").mkdir(exist_ok=True)
    os.mkfifo(git_dir / "objects" / "info" / "alternates")
    (git_dir / "HEAD").unlink()
    os.mkfifo(git_dir / "HEAD")
    (git_dir / "packed-refs").unlink(missing_ok=True)
    os.mkfifo(git_dir / "packed-refs")

    started = time.monotonic()
    lines = uncommitted_paths(repo, worktree.path)
    row = sync_report(repo, "main", [worktree])[0]

    assert time.monotonic() - started < 10
    assert "? README.md" in lines  # no index copied: every file is untracked
    assert row.checked_out is None


def test_a_fifo_as_an_ignore_file_costs_at_most_the_time_limit(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentvisor.git.worktrees as worktrees

    monkeypatch.setattr(worktrees, "STATUS_TIMEOUT_S", 2.0)
    worktree = ensure_worktree(repo, "dev", "main")
    os.mkfifo(worktree.path / ".gitignore")

    with pytest.raises(GitError, match="longer than 2 s"):
        uncommitted_paths(repo, worktree.path)
    assert sync_report(repo, "main", [worktree])[0].problem
