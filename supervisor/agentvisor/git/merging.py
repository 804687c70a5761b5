"""Bringing the agents' branches together, and how far each agent is from the start branch.

Merges happen in a throwaway worktree, so the user's checkout is never half merged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agentvisor.errors import Conflict, GitError, InvalidInput
from agentvisor.git.git_run import git_version, run_git
from agentvisor.git.refs import branch_exists, branch_tip, operation_in_progress
from agentvisor.git.worktrees import Worktree, checked_out_at, head_branch, uncommitted_paths

INTEGRATION_BRANCH = "agentvisor/integration"
MERGE_TREE_MIN_GIT = (2, 38)  # `git merge-tree --write-tree`
# Merges run no hooks: a hook may wait for input, and the throwaway checkout needs none.
_QUIET_MERGE_CONFIG = (f"core.hooksPath={os.devnull}",)
_QUIET_MERGE_ENV = {"GIT_LFS_SKIP_SMUDGE": "1"}
# A dry run's commits are never referenced, so they need no identity of the user's.
_THROWAWAY_IDENTITY = {
    f"GIT_{who}_{part}": value
    for who in ("AUTHOR", "COMMITTER")
    for part, value in (("NAME", "agentvisor"), ("EMAIL", "agentvisor@localhost"))
}

MergeStatus = Literal["merged", "conflict", "nothing-new"]


@dataclass(frozen=True)
class MergeResult:
    """What merging one branch did (or, in a dry run, would do)."""

    branch: str
    status: MergeStatus
    commit: str | None = None  # the merge commit; None in a dry run and unless merged
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class SyncRow:
    """Where one agent stands against the start branch. None means it could not be told."""

    role: str
    branch: str
    path: Path
    ahead: int | None
    behind: int | None
    modified: int | None
    untracked: int | None
    last_commit_at: float | None  # UTC epoch seconds (committer date)
    last_commit_subject: str | None
    checked_out: str | None = None
    problem: str | None = None

    @property
    def uncommitted(self) -> int | None:
        if self.modified is None or self.untracked is None:
            return None
        return self.modified + self.untracked


# --- merging -----------------------------------------------------------------------------------


def merge_branches(
    repo_root: Path | str,
    branches: Sequence[str],
    start_branch: str,
    into: str | None = None,
    dry_run: bool = False,
) -> list[MergeResult]:
    """Merge each branch, in order, into `into` (default the integration branch).

    The integration branch is made from `start_branch` when missing. A branch that conflicts
    is left out and the merge goes on with the next one. The target branch moves once, at the
    end, and only if nothing else moved it meanwhile.
    """
    root = Path(repo_root).resolve()
    target = into or INTEGRATION_BRANCH
    wanted = list(dict.fromkeys(branches))
    _check_request(root, wanted, start_branch, target)
    holder = _check_ready(root, target)
    if not wanted:
        return []
    old_tip = branch_tip(root, target)
    base = old_tip or branch_tip(root, start_branch)
    assert base is not None  # _check_request made sure the start branch exists
    if dry_run and _merge_tree_available():
        return _simulate(root, wanted, base, target)
    with _scratch_worktree(root, base) as scratch:
        results = [_merge_one(scratch, branch, target) for branch in wanted]
        new_tip = run_git(scratch, "rev-parse", "HEAD").stdout.strip()
    if not dry_run:
        _move_target(root, target, old_tip, new_tip, holder)
    return results


def _check_request(root: Path, branches: list[str], start_branch: str, target: str) -> None:
    if not branch_exists(root, start_branch):
        raise InvalidInput(f"the start branch {start_branch} does not exist in {root}")
    if run_git(root, "check-ref-format", "--branch", target, check=False).status != 0:
        raise InvalidInput(f"{target!r} is not a valid branch name")
    if target in branches:
        raise InvalidInput(f"cannot merge {target} into itself; leave it out of the branches")
    if target not in (INTEGRATION_BRANCH, start_branch):
        what = "the existing branch" if branch_exists(root, target) else "a new branch"
        raise Conflict(
            f"refusing to merge into {what} {target}: agentvisor merges only into "
            f"{INTEGRATION_BRANCH} (the default) or the start branch {start_branch} when asked "
            f"for it by name (--into {start_branch})"
        )
    missing = [branch for branch in branches if not branch_exists(root, branch)]
    if missing:
        raise InvalidInput(f"no such branch in {root}: {', '.join(missing)}")


def _check_ready(root: Path, target: str) -> Path | None:
    """Refuse when the user's checkout is busy; say where `target` is checked out, if anywhere."""
    operation = operation_in_progress(root)
    if operation is not None:
        raise Conflict(
            f"{root} has an unfinished operation ({operation}); finish or abort it first"
        )
    status = run_git(root, "status", "--porcelain", "--untracked-files=no").stdout
    if status.strip():
        raise Conflict(
            f"{root} has uncommitted changes; commit or stash them before merging "
            "(merges never start over a dirty checkout)"
        )
    holder = checked_out_at(root, target)
    if holder is not None and holder != root:
        raise Conflict(
            f"{target} is checked out in the worktree {holder}; switch that worktree to "
            "another branch first"
        )
    return holder


def _merge_one(scratch: Path, branch: str, target: str) -> MergeResult:
    if _count(scratch, f"HEAD..refs/heads/{branch}") == 0:
        return MergeResult(branch, "nothing-new")
    run = run_git(
        scratch,
        "merge",
        "--no-ff",
        "--no-edit",
        "-m",
        f"Merge {branch} into {target}",
        f"refs/heads/{branch}",
        config=_QUIET_MERGE_CONFIG,
        env=_QUIET_MERGE_ENV,
        check=False,
    )
    if run.status == 0:
        return MergeResult(branch, "merged", commit=_head(scratch))
    conflicts = _unmerged_paths(scratch)
    _abort(scratch)
    if not conflicts:
        raise GitError(f"cannot merge {branch} into {target}: {run.reason}")
    return MergeResult(branch, "conflict", conflicts=conflicts)


def _unmerged_paths(scratch: Path) -> tuple[str, ...]:
    out = run_git(scratch, "diff", "--name-only", "--diff-filter=U", "-z").stdout
    return tuple(sorted({path for path in out.split("\0") if path}))


def _abort(scratch: Path) -> None:
    """Put the throwaway checkout back exactly at its last commit for the next branch."""
    merging = run_git(scratch, "rev-parse", "--verify", "--quiet", "MERGE_HEAD", check=False)
    if merging.status == 0:
        run_git(scratch, "merge", "--abort", env=_QUIET_MERGE_ENV)
    run_git(scratch, "reset", "--quiet", "--hard", "HEAD", env=_QUIET_MERGE_ENV)
    run_git(scratch, "clean", "--quiet", "-ffdx")


def _move_target(
    root: Path, target: str, old_tip: str | None, new_tip: str, holder: Path | None
) -> None:
    if holder is not None:  # checked out in the user's (clean) checkout: move it along
        if new_tip != old_tip:
            run = run_git(root, "merge", "--ff-only", "--quiet", new_tip, check=False)
            if run.status != 0:
                raise GitError(f"cannot bring {root} forward to the merged {target}: {run.reason}")
        return
    if new_tip == old_tip:
        return
    # With the old value given, git refuses if someone moved (or made) the branch meanwhile.
    run = run_git(
        root,
        "update-ref",
        "-m",
        "agentvisor: merge agent branches",
        f"refs/heads/{target}",
        new_tip,
        old_tip or "",
        check=False,
    )
    if run.status != 0:
        raise GitError(f"{target} changed while merging; nothing was changed, run it again")


@contextlib.contextmanager
def _scratch_worktree(root: Path, commit: str) -> Iterator[Path]:
    """A detached worktree at `commit`, removed afterwards whatever happens."""
    folder = Path(tempfile.mkdtemp(prefix="agentvisor-merge-")).resolve()
    try:
        run = run_git(
            root,
            "worktree",
            "add",
            "--quiet",
            "--detach",
            str(folder),
            commit,
            config=_QUIET_MERGE_CONFIG,
            env=_QUIET_MERGE_ENV,
            check=False,
        )
        if run.status != 0:
            raise GitError(f"cannot make a throwaway worktree to merge in: {run.reason}")
        yield folder
    finally:
        # Only this worktree's record goes: `git worktree prune` would also drop the user's own
        # records of worktrees that are merely out of reach (an unmounted disk).
        run_git(root, "worktree", "remove", "--force", str(folder), check=False)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            run_git(root, "worktree", "remove", "--force", str(folder), check=False)


def _merge_tree_available() -> bool:
    return git_version()[:2] >= MERGE_TREE_MIN_GIT


def _simulate(root: Path, branches: list[str], base: str, target: str) -> list[MergeResult]:
    """A dry run with `git merge-tree`: only unreferenced objects are written, no ref moves."""
    tip, results = base, []
    for branch in branches:
        head = f"refs/heads/{branch}"
        if _count(root, f"{tip}..{head}") == 0:
            results.append(MergeResult(branch, "nothing-new"))
            continue
        run = run_git(
            root,
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            "-z",
            tip,
            head,
            check=False,
        )
        if run.status not in (0, 1):
            raise GitError(f"cannot work out merging {branch} into {target}: {run.reason}")
        tree, *conflicts = [field for field in run.stdout.split("\0") if field]
        if run.status == 1:
            results.append(MergeResult(branch, "conflict", conflicts=tuple(sorted(set(conflicts)))))
            continue
        # Later branches merge on top of this one, as in a real run.
        tip = run_git(
            root,
            "commit-tree",
            "--no-gpg-sign",
            tree,
            "-p",
            tip,
            "-p",
            head,
            "-m",
            f"Merge {branch} into {target}",
            env=_THROWAWAY_IDENTITY,
        ).stdout.strip()
        results.append(MergeResult(branch, "merged"))
    return results


def _count(cwd: Path, revisions: str) -> int:
    return int(run_git(cwd, "rev-list", "--count", revisions).stdout.strip())


def _head(cwd: Path) -> str:
    return run_git(cwd, "rev-parse", "HEAD").stdout.strip()


# --- where agents stand ------------------------------------------------------------------------


def sync_report(
    repo_root: Path | str, start_branch: str, worktrees: Sequence[Worktree]
) -> list[SyncRow]:
    """Per agent: commits ahead of and behind the start branch, uncommitted files, last commit."""
    root = Path(repo_root).resolve()
    if not branch_exists(root, start_branch):
        raise InvalidInput(f"the start branch {start_branch} does not exist in {root}")
    return [_sync_row(root, start_branch, worktree) for worktree in worktrees]


def _sync_row(root: Path, start_branch: str, worktree: Worktree) -> SyncRow:
    ahead = behind = modified = untracked = None
    last_at, subject, problems = None, None, []
    if branch_exists(root, worktree.branch):
        behind, ahead = _ahead_behind(root, start_branch, worktree.branch)
        last_at, subject = _last_commit(root, worktree.branch)
    else:
        problems.append(f"the branch {worktree.branch} does not exist")
    checked_out = None
    if worktree.path.is_dir():
        try:
            modified, untracked = _uncommitted_counts(root, worktree.path)
        except GitError as error:
            problems.append(error.message)
        checked_out = head_branch(root, worktree.path)
        if checked_out != worktree.branch:
            problems.append(f"the worktree has {checked_out or 'a detached HEAD'} checked out")
    else:
        problems.append(f"the worktree {worktree.path} is missing")
    return SyncRow(
        role=worktree.role,
        branch=worktree.branch,
        path=worktree.path,
        ahead=ahead,
        behind=behind,
        modified=modified,
        untracked=untracked,
        last_commit_at=last_at,
        last_commit_subject=subject,
        checked_out=checked_out,
        problem="; ".join(problems) or None,
    )


def _ahead_behind(root: Path, start_branch: str, branch: str) -> tuple[int, int]:
    """(behind, ahead): commits only on the start branch, commits only on `branch`."""
    out = run_git(
        root,
        "rev-list",
        "--left-right",
        "--count",
        f"refs/heads/{start_branch}...refs/heads/{branch}",
    ).stdout.split()
    return int(out[0]), int(out[1])


def _last_commit(root: Path, branch: str) -> tuple[float, str]:
    out = run_git(root, "log", "-1", "--format=%ct%x00%s", f"refs/heads/{branch}").stdout
    epoch, _, subject = out.partition("\0")
    return float(epoch), subject


def _uncommitted_counts(root: Path, path: Path) -> tuple[int, int]:
    """(modified, untracked) files in an agent's worktree; staged and unmerged count as modified."""
    lines = uncommitted_paths(root, path)
    untracked = sum(1 for line in lines if line.startswith("?"))
    return len(lines) - untracked, untracked
