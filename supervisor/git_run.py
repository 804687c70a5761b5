"""Running git on the project's repository and its worktrees, and what its refs say."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import git

from supervisor.errors import GitError

# Files in .git that say an operation is half done in the work tree that owns that git dir.
_OPERATION_MARKERS = (
    "MERGE_HEAD",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "rebase-merge",
    "rebase-apply",
)


@dataclass(frozen=True)
class GitRun:
    status: int
    stdout: str
    stderr: str

    @property
    def reason(self) -> str:
        """git's own explanation of a failure, without the `fatal:` prefix, for our messages."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        for line in lines:
            for prefix in ("fatal: ", "error: "):
                if line.startswith(prefix):
                    return line.removeprefix(prefix)
        return lines[-1] if lines else f"git exited with status {self.status}"


def run_git(
    cwd: Path,
    *args: str,
    config: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> GitRun:
    """Run `git ARGS` in `cwd`, a top folder agentvisor manages; GitError on failure if `check`.

    `safe.directory` names `cwd` because `chown_for_sandbox` may hand the project's `.git` to the
    sandbox uid, which git would otherwise refuse to use when the host user is root.
    """
    if not cwd.is_dir():  # GitPython would silently fall back to the process's own folder
        raise GitError(f"{cwd} does not exist or is not a folder")
    command = ["git", "-c", f"safe.directory={cwd.resolve()}"]
    for setting in config:
        command += ["-c", setting]
    status, stdout, stderr = git.Git(str(cwd)).execute(
        [*command, *args], with_extended_output=True, with_exceptions=False, env=env
    )
    run = GitRun(status, str(stdout), str(stderr))
    if check and status != 0:
        raise GitError(f"git {args[0]} failed in {cwd}: {run.reason}")
    return run


def git_common_dir(repo_root: Path) -> Path:
    """The repository's shared `.git` folder (also when `repo_root` is a linked worktree)."""
    out = run_git(resolved(repo_root), "rev-parse", "--path-format=absolute", "--git-common-dir")
    return Path(out.stdout.strip()).resolve()


def branch_exists(repo_root: Path, branch: str) -> bool:
    return _rev(repo_root, f"refs/heads/{branch}") is not None


def branch_tip(repo_root: Path, branch: str) -> str | None:
    """The commit a local branch points at, or None when there is no such branch."""
    return _rev(repo_root, f"refs/heads/{branch}")


def _rev(repo_root: Path, ref: str) -> str | None:
    run = run_git(
        resolved(repo_root), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False
    )
    return run.stdout.strip() if run.status == 0 else None


def operation_in_progress(repo_root: Path) -> str | None:
    """The name of the marker of a merge, rebase, cherry-pick or revert left half done."""
    git_dir = Path(run_git(resolved(repo_root), "rev-parse", "--absolute-git-dir").stdout.strip())
    return next((marker for marker in _OPERATION_MARKERS if (git_dir / marker).exists()), None)


def resolved(path: str | os.PathLike[str]) -> Path:
    """`path` made absolute with its symlinks resolved: one spelling per folder."""
    return Path(path).resolve()
