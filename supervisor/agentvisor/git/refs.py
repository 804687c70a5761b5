"""The operator's repository read from its files with GitPython: where it is, its git dirs, HEAD
and branch tips. No git process runs here; every other git operation goes through git_run.

GitPython would run `git` itself for objects and commands (`git cat-file` for `head.commit`,
`repo.git.*`), with the repository's own config in force and the inherited environment: the
repositories opened here have a command wrapper that refuses to run anything instead.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import git
from git.refs.symbolic import SymbolicReference

from agentvisor.errors import GitError
from agentvisor.git.git_run import resolved, run_git

# Files in a git dir that say an operation is half done in the work tree that owns it.
_OPERATION_MARKERS = (
    "MERGE_HEAD",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "rebase-merge",
    "rebase-apply",
)
# What GitPython's Repo() reads from the process environment: inherited (from a git hook that
# started agentvisor, say), they would point it at another repository, as they would git.
_GITPYTHON_LOCATION_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY")
_environ_lock = threading.Lock()


class _NoProcessGit(git.Git):
    """GitPython's command wrapper for the repositories read here: it runs nothing."""

    def execute(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise GitError(
            "internal error: GitPython was about to run git outside agentvisor's hardened "
            "runner (agentvisor.git.git_run); nothing was run"
        )


class FileRepo(git.Repo):
    """A git.Repo whose GitPython calls that would start `git` fail instead (see the module)."""

    GitCommandWrapperType = _NoProcessGit


@contextlib.contextmanager
def _location_env_hidden() -> Iterator[None]:
    """GitPython's Repo() without the inherited GIT_DIR-style variables, as host git runs
    (git_run.hardened_env); the process's environment is as it was afterwards."""
    with _environ_lock:
        hidden = {key: os.environ.pop(key) for key in _GITPYTHON_LOCATION_ENV if key in os.environ}
        try:
            yield
        finally:
            os.environ.update(hidden)


def open_repo(root: Path | str) -> FileRepo:
    """The repository whose top folder (or git dir) is `root`; nothing above it is searched."""
    folder = resolved(root)
    with _location_env_hidden():
        try:
            return FileRepo(folder, expand_vars=False)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as error:
            raise GitError(f"{folder} is not a git repository") from error


def discover(start: Path) -> FileRepo | None:
    """The repository holding the folder `start` (searched upwards), None when there is none.

    Callers make sure first that no agent can write `start` or a folder above it: GitPython
    reads the repository's config (core.bare, core.worktree, includes) to open it.
    """
    with _location_env_hidden():
        try:
            return FileRepo(resolved(start), search_parent_directories=True, expand_vars=False)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            return None


def git_common_dir(repo_root: Path | str) -> Path:
    """The repository's shared `.git` folder (also when `repo_root` is a linked worktree)."""
    return Path(open_repo(repo_root).common_dir).resolve()


def operation_in_progress(repo_root: Path | str) -> str | None:
    """The name of the marker of a merge, rebase, cherry-pick or revert left half done."""
    git_dir = Path(open_repo(repo_root).git_dir)
    return next((marker for marker in _OPERATION_MARKERS if (git_dir / marker).exists()), None)


def branch_exists(repo_root: Path | str, branch: str) -> bool:
    return branch_tip(repo_root, branch) is not None


def branch_tip(repo_root: Path | str, branch: str) -> str | None:
    """The commit a local branch points at, or None when there is no such branch."""
    repo = open_repo(repo_root)
    if not _refs_are_files(repo):
        return _tip_by_git(repo, f"refs/heads/{branch}")
    return _ref_value(repo, f"refs/heads/{branch}")


def head_commit(repo: FileRepo) -> str | None:
    """The commit HEAD names, None when its branch has no commit yet (or HEAD is unreadable)."""
    if not _refs_are_files(repo):
        return _tip_by_git(repo, "HEAD")
    return _ref_value(repo, "HEAD")


def head_branch(repo_root: Path | str) -> str | None:
    """The branch HEAD is on (whether or not it has commits yet); None when HEAD is detached
    or names no branch."""
    repo = open_repo(repo_root)
    if not _refs_are_files(repo):
        run = run_git(_top(repo), "symbolic-ref", "--quiet", "HEAD", check=False)
        target = run.stdout.strip() if run.status == 0 else ""
    else:
        try:
            target = str(repo.head.reference.path)
        except (TypeError, ValueError, OSError):  # detached, or no readable HEAD
            return None
    name = target.removeprefix("refs/heads/")
    return name if name and name != target else None


def _ref_value(repo: FileRepo, ref: str) -> str | None:
    """What `ref` names, symbolic refs followed, from its loose file or packed-refs.

    Git itself keeps branches on commits (it refuses to point refs/heads/ at anything else),
    so the value is the branch's commit; a ref name git would refuse reads as missing.
    """
    try:
        return SymbolicReference.dereference_recursive(repo, ref)
    except (ValueError, TypeError, OSError):
        return None


def _refs_are_files(repo: FileRepo) -> bool:
    """Whether the refs are loose files and packed-refs, all GitPython reads (a repository
    with `extensions.refStorage = reftable` is left to git)."""
    config = repo.config_reader("repository")
    for section in config.sections():
        if section.lower() == "extensions":
            for key, value in config.items(section):
                if key.lower() == "refstorage" and str(value).strip().lower() != "files":
                    return False
    return True


def _tip_by_git(repo: FileRepo, ref: str) -> str | None:
    run = run_git(_top(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return run.stdout.strip() if run.status == 0 else None


def _top(repo: FileRepo) -> Path:
    return resolved(repo.working_tree_dir or repo.git_dir)
