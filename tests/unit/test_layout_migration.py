"""`agentvisor migrate`: from linked worktrees sharing the project's .git (agentvisor 0.1) to a
repository per agent, on real repositories laid out as the old version left them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agentvisor.git.layout_migration import (
    KEPT_SUFFIX,
    QUARANTINE_SUFFIX,
    migrate,
    old_layout_roles,
)
from agentvisor.git.worktrees import ensure_worktree, is_agent_clone, list_worktrees, worktrees_dir
from tests.helpers import git, make_repo

OLD_UID = 1000  # what agentvisor 0.1 chowned the project's .git to on a root host


def old_layout(tmp_path: Path, roles: tuple[str, ...] = ("dev", "qa")) -> Path:
    repo = make_repo(tmp_path / "proj", "# spec\n")
    for role in roles:
        path = worktrees_dir(repo) / role
        path.parent.mkdir(exist_ok=True)
        git(repo, "worktree", "add", "--quiet", "-b", f"agent/{role}", str(path))
    return repo


def test_old_layout_projects_are_refused_until_migrated(tmp_path: Path) -> None:
    repo = old_layout(tmp_path)
    assert old_layout_roles(repo) == ["dev", "qa"]

    with pytest.raises(Exception, match="agentvisor migrate"):
        ensure_worktree(repo, "dev", "main")


def test_migrate_gives_each_agent_a_clone_with_its_committed_and_uncommitted_work(
    tmp_path: Path,
) -> None:
    repo = old_layout(tmp_path)
    dev = worktrees_dir(repo) / "dev"
    (dev / "done.txt").write_text("committed\n")
    git(dev, "add", "done.txt")
    git(dev, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "agent work")
    (dev / "draft.txt").write_text("not committed yet\n")

    report = migrate(repo, "main", None)

    assert report.migrated == ["dev", "qa"]
    assert is_agent_clone(dev) and (dev / "done.txt").is_file()
    assert (dev / "draft.txt").read_text() == "not committed yet\n"
    assert git(dev, "status", "--porcelain").split() == ["??", "draft.txt"]
    assert (worktrees_dir(repo) / f"dev{KEPT_SUFFIX}" / "draft.txt").is_file()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert [w.role for w in list_worktrees(repo)] == ["dev", "qa"]
    assert old_layout_roles(repo) == []
    assert migrate(repo, "main", None).migrated == []


@pytest.mark.skipif(os.geteuid() != 0, reason="files of another uid need root")
def test_migrate_gives_the_git_dir_back_and_sets_aside_what_the_sandbox_planted(
    tmp_path: Path,
) -> None:
    repo = old_layout(tmp_path, ("dev",))
    marker = tmp_path / "planted-ran"
    attributes = repo / ".git" / "info" / "attributes"
    attributes.parent.mkdir(exist_ok=True)
    attributes.write_text("* filter=evil\n")
    for path in [repo / ".git", *(repo / ".git").rglob("*")]:
        os.chown(path, OLD_UID, OLD_UID, follow_symlinks=False)
    owner = repo.stat().st_uid

    report = migrate(repo, "main", (64100, 64100))

    assert report.quarantined == [attributes.with_name("attributes" + QUARANTINE_SUFFIX)]
    assert not attributes.exists()
    assert {p.lstat().st_uid for p in [repo / ".git", *(repo / ".git").rglob("*")]} == {owner}
    clone = worktrees_dir(repo) / "dev"
    assert {p.lstat().st_uid for p in [clone, *clone.rglob("*")]} == {64100}
    subprocess.run(["git", "status"], cwd=repo, check=True, capture_output=True)
    assert not marker.exists()
