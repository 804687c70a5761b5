"""Project discovery, agent worktrees and sandbox git mounts, on real throwaway repositories."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import git
import pytest

from supervisor.errors import Conflict, GitError, InvalidInput, SpecError
from supervisor.git_mounts import Mount, chown_for_sandbox, git_mounts
from supervisor.git_run import git_common_dir
from supervisor.merging import sync_report
from supervisor.project_repo import create_new_project, find_project, project_slug, start_branch
from supervisor.worktrees import (
    Worktree,
    admin_dir,
    ensure_worktree,
    list_worktrees,
    remove_worktree,
    uncommitted_paths,
    worktrees_dir,
)


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
    return git.Git(str(cwd)).execute(["git", *args])


def make_repo(path: Path, branch: str = "main") -> Path:
    path.mkdir(parents=True)
    sh(path, "init", "--quiet", "-b", branch)
    (path / "README.md").write_text("hello\n")
    sh(path, "add", "README.md")
    sh(path, "commit", "--quiet", "-m", "first")
    return path.resolve()


def commit_file(cwd: Path, name: str, text: str, message: str) -> str:
    (cwd / name).write_text(text)
    sh(cwd, "add", name)
    sh(cwd, "commit", "--quiet", "-m", message)
    return sh(cwd, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj")


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


def test_ensure_worktree_refuses_a_folder_that_is_not_a_worktree(repo: Path) -> None:
    stray = repo.parent / "proj-worktrees" / "dev"
    stray.mkdir(parents=True)

    with pytest.raises(GitError, match="exists but is not a worktree"):
        ensure_worktree(repo, "dev", "main")


def test_ensure_worktree_makes_again_a_worktree_whose_folder_was_deleted(repo: Path) -> None:
    first = ensure_worktree(repo, "dev", "main")
    commit_file(first.path, "kept.txt", "k\n", "committed work")
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


def test_a_commit_in_a_worktree_lands_on_its_branch_as_seen_from_the_main_repository(
    repo: Path,
) -> None:
    worktree = ensure_worktree(repo, "dev", "main")

    commit = commit_file(worktree.path, "feature.py", "print(1)\n", "add feature")

    assert sh(repo, "rev-parse", "agent/dev") == commit
    assert sh(repo, "show", "agent/dev:feature.py") == "print(1)"
    assert sh(repo, "branch", "--show-current") == "main"
    assert not (repo / "feature.py").exists()


def test_git_worktree_list_and_list_worktrees_show_the_agents(repo: Path) -> None:
    ensure_worktree(repo, "qa", "main")
    ensure_worktree(repo, "dev", "main")

    listed = sh(repo, "worktree", "list", "--porcelain")

    assert f"worktree {repo.parent}/proj-worktrees/dev\n" in listed
    assert "branch refs/heads/agent/qa" in listed
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


def test_remove_worktree_deletes_the_branch_when_asked_and_is_idempotent(repo: Path) -> None:
    worktree = ensure_worktree(repo, "dev", "main")
    commit_file(worktree.path, "f.txt", "f\n", "unmerged work")

    assert remove_worktree(repo, "dev", delete_branch=True)
    assert not remove_worktree(repo, "dev", delete_branch=True)

    assert sh(repo, "branch", "--list", "agent/dev") == ""


def test_remove_worktree_leaves_a_folder_it_does_not_own_alone(repo: Path) -> None:
    stray = worktrees_dir(repo) / "dev"
    stray.mkdir(parents=True)

    with pytest.raises(GitError, match="leaves it alone"):
        remove_worktree(repo, "dev")
    assert stray.exists()


def test_host_side_status_ignores_a_git_file_the_agent_redirected(
    repo: Path, tmp_path: Path
) -> None:
    worktree = ensure_worktree(repo, "dev", "main")
    marker = tmp_path / "host-ran-agent-command"
    evil = _redirect_git_file_to_hostile_config(repo, worktree.path, tmp_path / "evil", marker)

    plain = subprocess.run(["git", "status"], cwd=worktree.path, capture_output=True)
    assert plain.returncode == 0 and marker.exists(), "the hostile config is not effective"
    marker.unlink()

    (worktree.path / "new.txt").write_text("n\n")
    assert uncommitted_paths(repo, worktree.path) == ["? new.txt"]
    assert sync_report(repo, "main", [worktree])[0].untracked == 1
    assert not marker.exists()
    assert evil.is_dir()


def _redirect_git_file_to_hostile_config(
    repo: Path, worktree: Path, evil: Path, marker: Path
) -> Path:
    """What an agent could do from its sandbox: point `.git` at a repository it controls."""
    shutil.copytree(admin_dir(repo, worktree), evil)
    common = evil / "common"
    shutil.copytree(git_common_dir(repo), common, symlinks=True)
    (evil / "commondir").write_text(f"{common}\n")
    script = evil / "fsmonitor.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    script.chmod(0o755)
    with (common / "config").open("a") as config:
        config.write(f"[core]\n\tfsmonitor = {script}\n")
    (worktree / ".git").write_text(f"gitdir: {evil}\n")
    return evil


# --- sandbox mounts ----------------------------------------------------------------------------


def test_git_mounts_layer_the_git_dir_writable_with_read_only_records_config_and_hooks(
    repo: Path,
) -> None:
    worktree = ensure_worktree(repo, "dev", "main")
    dot_git = repo / ".git"
    admin = dot_git / "worktrees" / "dev"

    mounts = git_mounts(repo, worktree)

    assert [(m.source, m.read_only) for m in mounts] == [
        (dot_git, False),
        (dot_git / "worktrees", True),
        (admin, False),
        (admin / "gitdir", True),
        (admin / "commondir", True),
        (admin / "config.worktree", True),
        (dot_git / "config", True),
        (dot_git / "hooks", True),
    ]
    assert all(m.source == m.target and m.source.exists() for m in mounts)
    assert (worktree.path / ".git").read_text().strip() == f"gitdir: {admin}"


def test_git_mounts_find_the_record_when_git_numbered_its_name(repo: Path, tmp_path: Path) -> None:
    sh(repo, "worktree", "add", "--quiet", str(tmp_path / "mine" / "dev"), "-b", "mine")
    worktree = ensure_worktree(repo, "dev", "main")

    mounts = git_mounts(repo, worktree)

    assert mounts[2].source == repo / ".git" / "worktrees" / "dev1"


def _can_unshare_mounts() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare_mounts(), reason="needs unshare -m (root or user namespaces)")
def test_git_mounts_are_enough_to_commit_and_keep_the_host_records_config_and_hooks_safe(
    repo: Path, tmp_path: Path
) -> None:
    other = ensure_worktree(repo, "other", "main")
    worktree = ensure_worktree(repo, "dev", "main")
    mounts = git_mounts(repo, worktree)
    probes = _run_in_mount_namespace(repo, worktree, mounts, tmp_path)

    assert probes == {
        "commit": "ok",
        "branch": "ok",
        "stash": "ok",
        "write hook": "denied",
        "write config": "denied",
        "git config": "denied",
        "remove other record": "denied",
        "prune": "denied",
        "redirect commondir": "denied",
        "main work tree": "hidden",
    }
    assert sh(repo, "log", "-1", "--format=%s", "agent/dev") == "inside the sandbox"
    assert (repo / ".git" / "worktrees" / admin_dir(repo, other).name).is_dir()
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()


def _run_in_mount_namespace(
    repo: Path, worktree: Worktree, mounts: list[Mount], tmp_path: Path
) -> dict[str, str]:
    """Apply the mounts as a sandbox would, with the main work tree hidden, and probe git."""
    stage = tmp_path / "stage"
    stage.mkdir()
    layers = "\n".join(
        f"{str(m.source).replace(str(repo), str(stage), 1)}\t{m.target}\t"
        f"{'ro' if m.read_only else 'rw'}"
        for m in mounts
    )
    (tmp_path / "mounts.tsv").write_text(layers + "\n")
    admin = mounts[2].target
    other = next(p for p in (repo / ".git" / "worktrees").iterdir() if p != admin)
    script = tmp_path / "sandbox.sh"
    script.write_text(
        f"""set -u
mount --bind {repo} {stage}
mount -t tmpfs tmpfs {repo}
mkdir {repo}/.git
while IFS='\t' read -r src tgt mode; do
  mount --bind "$src" "$tgt" || exit 90
  if [ "$mode" = ro ]; then mount -o remount,bind,ro "$tgt" || exit 91; fi
done < {tmp_path}/mounts.tsv
cd {worktree.path}
probe() {{ name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name=ok"; \
else echo "$name=denied"; fi; }}
echo change > sandbox.txt && git add sandbox.txt
probe commit git commit --quiet -m "inside the sandbox"
probe branch git branch agent-side-branch
echo wip > wip.txt && git add wip.txt
probe stash sh -c 'git stash --quiet && git stash pop --quiet && git reset --quiet'
probe "write hook" sh -c 'echo evil > {repo}/.git/hooks/post-checkout'
probe "write config" sh -c 'echo evil >> {repo}/.git/config'
probe "git config" git config core.hooksPath /tmp
probe "remove other record" rm -rf {other}
probe prune sh -c 'rm -f {other}/gitdir && git worktree prune && test ! -e {other}'
probe "redirect commondir" sh -c 'echo /tmp > {admin}/commondir'
if [ -e {repo}/README.md ]; then echo "main work tree=visible"; \
else echo "main work tree=hidden"; fi
"""
    )
    run = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", str(script)],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert run.returncode == 0, run.stderr
    return dict(line.split("=", 1) for line in run.stdout.splitlines())


# --- ownership for sandboxes -------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_host_git_still_works_after_handing_the_git_dir_to_the_sandbox_uid(repo: Path) -> None:
    worktree = ensure_worktree(repo, "dev", "main")
    commit_file(worktree.path, "a.txt", "a\n", "agent work")
    (worktree.path / "dirty.txt").write_text("d\n")

    chown_for_sandbox([worktree.path, git_common_dir(repo)], 1000, 1000)

    assert (repo / ".git" / "HEAD").stat().st_uid == 1000
    assert (worktree.path / "a.txt").stat().st_uid == 1000
    assert [w.role for w in list_worktrees(repo)] == ["dev"]
    row = sync_report(repo, "main", [worktree])[0]
    assert (row.ahead, row.untracked) == (1, 1)
    assert ensure_worktree(repo, "qa", "main").created
    assert start_branch(repo) == "main"
