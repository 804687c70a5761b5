"""Merging agents' branches and the sync report, on real throwaway repositories."""

from __future__ import annotations

import shutil
from pathlib import Path

import git
import pytest

from agentvisor.errors import Conflict, GitError, InvalidInput
from agentvisor.git import merging
from agentvisor.git.merging import INTEGRATION_BRANCH, MergeResult, merge_branches, sync_report
from agentvisor.git.worktrees import ensure_worktree


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
    return global_config


def sh(cwd: Path, *args: str) -> str:
    return git.Git(str(cwd)).execute(["git", *args])


def commit_file(cwd: Path, name: str, text: str, message: str) -> str:
    (cwd / name).write_text(text)
    sh(cwd, "add", name)
    sh(cwd, "commit", "--quiet", "-m", message)
    return sh(cwd, "rev-parse", "HEAD")


def on_branch(repo: Path, branch: str, start: str, files: dict[str, str]) -> None:
    """Commit `files` on a new `branch` made from `start`, then come back to main."""
    sh(repo, "switch", "--quiet", "-c", branch, start)
    for name, text in files.items():
        commit_file(repo, name, text, f"{branch}: {name}")
    sh(repo, "switch", "--quiet", "main")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main, with agent/clean (a new file), agent/clash (the line main changed), agent/idle."""
    root = tmp_path / "proj"
    root.mkdir()
    sh(root, "init", "--quiet", "-b", "main")
    commit_file(root, "shared.txt", "base\n", "first")
    sh(root, "branch", "agent/idle")
    on_branch(root, "agent/clean", "main", {"clean.txt": "clean\n"})
    on_branch(root, "agent/clash", "main", {"shared.txt": "agent\n"})
    commit_file(root, "shared.txt", "main\n", "main changes the shared line")
    return root.resolve()


def state(repo: Path) -> dict[str, object]:
    """What the user sees of their checkout."""
    return {
        "branch": sh(repo, "branch", "--show-current"),
        "head": sh(repo, "rev-parse", "HEAD"),
        "status": sh(repo, "status", "--porcelain", "--untracked-files=all"),
        "merge_head": (repo / ".git" / "MERGE_HEAD").exists(),
        "worktrees": sh(repo, "worktree", "list", "--porcelain"),
    }


def refs(repo: Path) -> str:
    return sh(repo, "for-each-ref", "--format=%(refname) %(objectname)")


ALL = ["agent/clash", "agent/clean", "agent/idle"]


# --- merging -----------------------------------------------------------------------------------


def test_merge_reports_conflict_merged_and_nothing_new_and_leaves_the_checkout_untouched(
    repo: Path,
) -> None:
    before = state(repo)
    main_tip = sh(repo, "rev-parse", "main")

    results = merge_branches(repo, ALL, "main")

    assert [(r.branch, r.status, r.conflicts) for r in results] == [
        ("agent/clash", "conflict", ("shared.txt",)),
        ("agent/clean", "merged", ()),
        ("agent/idle", "nothing-new", ()),
    ]
    assert results[0].commit is None and results[2].commit is None
    assert state(repo) == before
    integration = sh(repo, "rev-parse", INTEGRATION_BRANCH)
    assert results[1].commit == integration
    assert sh(repo, "rev-parse", f"{integration}^1") == main_tip
    assert sh(repo, "rev-parse", f"{integration}^2") == sh(repo, "rev-parse", "agent/clean")
    assert sh(repo, "show", f"{INTEGRATION_BRANCH}:shared.txt") == "main"
    assert sh(repo, "show", f"{INTEGRATION_BRANCH}:clean.txt") == "clean"
    assert sh(repo, "log", "-1", "--format=%s", INTEGRATION_BRANCH) == (
        f"Merge agent/clean into {INTEGRATION_BRANCH}"
    )


def test_merge_again_finds_nothing_new_and_keeps_the_integration_branch(repo: Path) -> None:
    merge_branches(repo, ["agent/clean"], "main")
    tip = sh(repo, "rev-parse", INTEGRATION_BRANCH)

    again = merge_branches(repo, ["agent/clean"], "main")

    assert again == [MergeResult("agent/clean", "nothing-new")]
    assert sh(repo, "rev-parse", INTEGRATION_BRANCH) == tip


def test_merge_makes_the_integration_branch_from_the_start_branch_even_with_nothing_merged(
    repo: Path,
) -> None:
    merge_branches(repo, ["agent/idle"], "main")

    assert sh(repo, "rev-parse", INTEGRATION_BRANCH) == sh(repo, "rev-parse", "main")


def test_merge_builds_on_an_existing_integration_branch(repo: Path) -> None:
    merge_branches(repo, ["agent/clean"], "main")
    sh(repo, "switch", "--quiet", "agent/clean")
    commit_file(repo, "clean.txt", "cleaner\n", "more clean work")
    sh(repo, "switch", "--quiet", "main")

    [result] = merge_branches(repo, ["agent/clean"], "main")

    assert result.status == "merged"
    assert sh(repo, "show", f"{INTEGRATION_BRANCH}:clean.txt") == "cleaner"


def test_dry_run_reports_what_a_real_run_does_and_changes_nothing(repo: Path) -> None:
    before, refs_before = state(repo), refs(repo)

    dry = merge_branches(repo, ALL, "main", dry_run=True)

    assert (state(repo), refs(repo)) == (before, refs_before)
    real = merge_branches(repo, ALL, "main")
    assert [(r.branch, r.status, r.conflicts) for r in dry] == [
        (r.branch, r.status, r.conflicts) for r in real
    ]
    assert all(r.commit is None for r in dry)


def test_dry_run_merges_each_branch_on_top_of_the_ones_before(repo: Path) -> None:
    on_branch(repo, "agent/one", "main", {"new.txt": "one\n"})
    on_branch(repo, "agent/two", "main", {"new.txt": "two\n"})

    dry = merge_branches(repo, ["agent/one", "agent/two"], "main", dry_run=True)

    assert [(r.status, r.conflicts) for r in dry] == [("merged", ()), ("conflict", ("new.txt",))]


def test_dry_run_without_merge_tree_uses_a_throwaway_worktree_and_changes_nothing(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(merging, "_merge_tree_available", lambda: False)
    before, refs_before = state(repo), refs(repo)

    dry = merge_branches(repo, ALL, "main", dry_run=True)

    assert [r.status for r in dry] == ["conflict", "merged", "nothing-new"]
    assert (state(repo), refs(repo)) == (before, refs_before)


def test_merge_into_the_start_branch_only_when_named_and_brings_the_checkout_along(
    repo: Path,
) -> None:
    results = merge_branches(repo, ["agent/clean"], "main", into="main")

    assert results[0].status == "merged"
    assert sh(repo, "rev-parse", "HEAD") == results[0].commit
    assert (repo / "clean.txt").read_text() == "clean\n"
    assert sh(repo, "status", "--porcelain") == ""
    assert sh(repo, "branch", "--list", INTEGRATION_BRANCH) == ""


def test_merge_into_a_new_branch_is_refused_and_creates_nothing(repo: Path) -> None:
    with pytest.raises(Conflict, match=r"into a new branch release/1: .*only into"):
        merge_branches(repo, ["agent/clean"], "main", into="release/1")

    assert sh(repo, "branch", "--list", "release/1") == ""


def test_merge_refuses_any_other_existing_branch(repo: Path) -> None:
    sh(repo, "branch", "feature")

    with pytest.raises(Conflict, match=f"only into {INTEGRATION_BRANCH}"):
        merge_branches(repo, ["agent/clean"], "main", into="feature")
    with pytest.raises(Conflict, match="existing branch agent/idle"):
        merge_branches(repo, ["agent/clean"], "main", into="agent/idle")


def test_merge_refuses_a_branch_into_itself_an_unknown_branch_and_a_bad_name(repo: Path) -> None:
    with pytest.raises(InvalidInput, match="into itself"):
        merge_branches(repo, ["main"], "main", into="main")
    with pytest.raises(InvalidInput, match=r"no such branch.*agent/ghost"):
        merge_branches(repo, ["agent/clean", "agent/ghost"], "main")
    with pytest.raises(InvalidInput, match="not a valid branch name"):
        merge_branches(repo, ["agent/clean"], "main", into="bad..name")
    assert sh(repo, "branch", "--list", INTEGRATION_BRANCH) == ""


def test_merge_refuses_a_checkout_with_uncommitted_changes(repo: Path) -> None:
    (repo / "shared.txt").write_text("edited\n")

    with pytest.raises(Conflict, match="uncommitted changes"):
        merge_branches(repo, ["agent/clean"], "main")
    assert sh(repo, "branch", "--list", INTEGRATION_BRANCH) == ""


def test_merge_ignores_untracked_files_in_the_checkout(repo: Path) -> None:
    (repo / "notes.txt").write_text("mine\n")

    assert merge_branches(repo, ["agent/clean"], "main")[0].status == "merged"
    assert (repo / "notes.txt").read_text() == "mine\n"


def test_merge_refuses_a_checkout_with_a_merge_in_progress(repo: Path) -> None:
    sh(repo, "merge", "--no-commit", "--no-ff", "agent/clean")

    with pytest.raises(Conflict, match="unfinished operation \\(MERGE_HEAD\\)"):
        merge_branches(repo, ["agent/clean"], "main", dry_run=True)


def test_merge_refuses_a_target_checked_out_in_another_worktree(repo: Path, tmp_path: Path) -> None:
    sh(repo, "branch", INTEGRATION_BRANCH, "main")
    sh(repo, "worktree", "add", "--quiet", str(tmp_path / "look"), INTEGRATION_BRANCH)

    with pytest.raises(Conflict, match="checked out in the worktree"):
        merge_branches(repo, ["agent/clean"], "main")


def test_merge_runs_no_hooks(repo: Path) -> None:
    for hook in ("pre-merge-commit", "post-checkout", "post-merge", "commit-msg"):
        path = repo / ".git" / "hooks" / hook
        path.write_text("#!/bin/sh\nexit 1\n")
        path.chmod(0o755)

    assert merge_branches(repo, ["agent/clean"], "main")[0].status == "merged"


def test_a_failing_merge_removes_its_worktree_and_moves_no_branch(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("NAME", "EMAIL"):
        monkeypatch.delenv(f"GIT_COMMITTER_{variable}")
    sh(repo, "config", "user.useConfigOnly", "true")  # no identity: git cannot commit
    before, refs_before = state(repo), refs(repo)

    with pytest.raises(GitError, match="cannot merge agent/clean"):
        merge_branches(repo, ["agent/clean"], "main")

    assert (state(repo), refs(repo)) == (before, refs_before)


# --- the sync report ---------------------------------------------------------------------------


def test_sync_report_counts_commits_uncommitted_files_and_the_last_commit(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worktree = ensure_worktree(repo, "dev", "agent/clean")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "1700000000 +0000")
    commit_file(worktree.path, "more.txt", "more\n", "more agent work")
    sh(worktree.path, "push", "--quiet", f"file://{repo}", "agent/dev")  # as the channel does
    (worktree.path / "clean.txt").write_text("changed\n")
    (worktree.path / "new1.txt").write_text("1\n")
    (worktree.path / "sub").mkdir()
    (worktree.path / "sub" / "new2.txt").write_text("2\n")

    [row] = sync_report(repo, "main", [worktree])

    assert (row.role, row.branch, row.ahead, row.behind) == ("dev", "agent/dev", 2, 1)
    assert (row.modified, row.untracked, row.uncommitted) == (1, 2, 3)
    assert (row.last_commit_at, row.last_commit_subject) == (1700000000.0, "more agent work")
    assert (row.checked_out, row.problem) == ("agent/dev", None)


def test_sync_report_says_what_it_cannot_tell(repo: Path) -> None:
    gone = ensure_worktree(repo, "gone", "main")
    shutil.rmtree(gone.path)
    switched = ensure_worktree(repo, "switched", "main")
    sh(switched.path, "switch", "--quiet", "-c", "side")
    sh(switched.path, "branch", "--quiet", "-D", "agent/switched")

    rows = sync_report(repo, "main", [gone, switched])

    assert rows[0].uncommitted is None and "is missing" in (rows[0].problem or "")
    # What the project has of the branch counts: deleting it in the clone changes nothing there.
    assert rows[1].ahead == 0 and rows[1].uncommitted == 0
    assert "has side checked out" in (rows[1].problem or "")
    sh(repo, "branch", "--quiet", "-D", "agent/switched")
    [row] = sync_report(repo, "main", [switched])
    assert row.ahead is None and "agent/switched does not exist" in (row.problem or "")
