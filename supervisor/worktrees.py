"""One git worktree and branch per agent, beside the project's repository."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from supervisor.errors import Conflict, GitError, InvalidInput
from supervisor.git_run import GitRun, branch_exists, git_common_dir, resolved, run_git

AGENT_BRANCH_PREFIX = "agent/"
_ROLE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class Worktree:
    """An agent's worktree: its folder and the branch agentvisor made for it."""

    path: Path
    branch: str
    created: bool = False

    @property
    def role(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class _Registration:
    """One entry of `git worktree list`."""

    path: Path
    head: str | None
    branch: str | None
    prunable: bool


def agent_branch(role: str) -> str:
    return f"{AGENT_BRANCH_PREFIX}{role}"


def worktrees_dir(repo_root: Path | str) -> Path:
    """`<repo>-worktrees`, the sibling folder holding one worktree per agent."""
    root = resolved(repo_root)
    return root.parent / f"{root.name}-worktrees"


def worktree_path(repo_root: Path | str, role: str) -> Path:
    _check_role(role)
    return worktrees_dir(repo_root) / role


def _check_role(role: str) -> None:
    if not _ROLE_PATTERN.fullmatch(role):
        raise InvalidInput(
            f"the role {role!r} cannot name a folder and a branch; use 1 to 64 "
            "letters, digits, '-' or '_', starting with a letter or digit"
        )


def ensure_worktree(repo_root: Path | str, role: str, start_branch: str) -> Worktree:
    """The agent's worktree and branch `agent/<role>`, made from `start_branch` if missing.

    An existing branch is reused as it is (never reset), so an agent keeps its work across runs.
    """
    root = resolved(repo_root)
    path, branch = worktree_path(root, role), agent_branch(role)
    registration = _registration_at(root, path)
    if registration is not None and not registration.prunable:
        return Worktree(path, branch, created=False)
    if registration is not None:  # its folder was deleted: forget it, then make it again
        run_git(root, "worktree", "remove", "--force", str(path))
    if path.exists() or path.is_symlink():
        raise GitError(
            f"{path} exists but is not a worktree of {root}; move it away or delete "
            "it, then try again"
        )
    if branch_exists(root, branch):
        args = [str(path), branch]
    elif branch_exists(root, start_branch):
        args = ["-b", branch, str(path), start_branch]
    else:
        raise GitError(f"the start branch {start_branch} does not exist in {root}")
    path.parent.mkdir(parents=True, exist_ok=True)
    run = run_git(root, "worktree", "add", "--quiet", *args, check=False)
    if run.status != 0:
        raise GitError(f"cannot make the worktree of {role} at {path}: {run.reason}")
    return Worktree(path, branch, created=True)


def remove_worktree(
    repo_root: Path | str, role: str, delete_branch: bool = False, *, force: bool = False
) -> bool:
    """Remove the agent's worktree (and its branch if asked); False when there was none.

    Uncommitted work is discarded only with `force`. `delete_branch` deletes the branch even
    when its commits are merged nowhere.
    """
    root = resolved(repo_root)
    path, branch = worktree_path(root, role), agent_branch(role)
    registration = _registration_at(root, path)
    if registration is None and path.exists():
        raise GitError(f"{path} is not a worktree of {root}; agentvisor leaves it alone")
    if registration is not None:
        if not registration.prunable and not force:
            _refuse_if_dirty(root, path, role)
        run_git(root, "worktree", "remove", *(["--force"] if force else []), str(path))
    if delete_branch and branch_exists(root, branch):
        run_git(root, "branch", "--delete", "--force", branch)
    _remove_if_empty(worktrees_dir(root))
    return registration is not None


def _refuse_if_dirty(root: Path, path: Path, role: str) -> None:
    changes = uncommitted_paths(root, path)
    if changes:
        raise Conflict(
            f"the worktree of {role} at {path} has {len(changes)} uncommitted "
            "change(s); commit them first, or remove it with force"
        )


def uncommitted_paths(repo_root: Path, worktree_path: Path) -> list[str]:
    """`git status --porcelain=v2` lines of an agent's worktree: changed and untracked files."""
    run = run_git_in_worktree(
        repo_root, worktree_path, "status", "--porcelain=v2", "--untracked-files=all"
    )
    return [line for line in run.stdout.splitlines() if line and not line.startswith("#")]


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty, or already gone: both fine
        folder.rmdir()


def list_worktrees(repo_root: Path | str) -> list[Worktree]:
    """The agents' worktrees registered in the repository, by role."""
    root = resolved(repo_root)
    folder = worktrees_dir(root)
    found = [
        Worktree(entry.path, agent_branch(entry.path.name))
        for entry in _registrations(root)
        if entry.path.parent == folder and _ROLE_PATTERN.fullmatch(entry.path.name)
    ]
    return sorted(found, key=lambda worktree: worktree.role)


def checked_out_at(repo_root: Path | str, branch: str) -> Path | None:
    """The worktree (the main one included) where `branch` is checked out, if any."""
    return next(
        (entry.path for entry in _registrations(resolved(repo_root)) if entry.branch == branch),
        None,
    )


def head_branch(repo_root: Path | str, path: Path) -> str | None:
    """The branch checked out in the registered worktree at `path` (None when detached)."""
    entry = _registration_at(resolved(repo_root), path)
    return entry.branch if entry else None


def _registration_at(root: Path, path: Path) -> _Registration | None:
    wanted = path.resolve()
    return next((entry for entry in _registrations(root) if entry.path == wanted), None)


def _registrations(root: Path) -> list[_Registration]:
    out = run_git(root, "worktree", "list", "--porcelain", "-z").stdout
    entries, fields = [], {}
    for item in out.split("\0"):
        if item:
            key, _, value = item.partition(" ")
            fields[key] = value
        elif fields:
            entries.append(_registration(fields))
            fields = {}
    if fields:
        entries.append(_registration(fields))
    return entries


def _registration(fields: dict[str, str]) -> _Registration:
    branch = fields.get("branch")
    return _Registration(
        path=Path(fields["worktree"]).resolve(),
        head=fields.get("HEAD"),
        branch=branch.removeprefix("refs/heads/") if branch else None,
        prunable="prunable" in fields,
    )


def run_git_in_worktree(repo_root: Path, worktree_path: Path, *args: str) -> GitRun:
    """Run git on the host in an agent's worktree without trusting anything the agent can write.

    The agent controls the worktree's `.git` file and, from inside its sandbox, could point it at
    a config of its own (`core.fsmonitor` runs a command). So the git dirs come from the host's
    registration, never from that file, and the commands take no optional locks so they do not
    fight the agent's own git over `index.lock`.
    """
    root = resolved(repo_root)
    common = git_common_dir(root)
    admin = admin_dir(root, worktree_path)
    env = {
        "GIT_DIR": str(admin),
        "GIT_COMMON_DIR": str(common),
        "GIT_WORK_TREE": str(worktree_path.resolve()),
        "GIT_OPTIONAL_LOCKS": "0",
    }
    return run_git(
        worktree_path,
        *args,
        config=("core.fsmonitor=false", f"core.hooksPath={os.devnull}"),
        env=env,
    )


def admin_dir(repo_root: Path | str, worktree: Worktree | Path) -> Path:
    """`.git/worktrees/<name>`, the host's record of a worktree, found from the host's side.

    git names the record after the folder, with a number added on a clash, so it is looked up
    by the `gitdir` file inside it rather than guessed or read from the worktree's `.git` file.
    """
    root = resolved(repo_root)
    path = (worktree.path if isinstance(worktree, Worktree) else worktree).resolve()
    records = git_common_dir(root) / "worktrees"
    for record in sorted(records.iterdir()) if records.is_dir() else ():
        gitdir = record / "gitdir"
        # Relative when git is set to write relative worktree paths (2.48+): from the record.
        if gitdir.is_file() and (record / gitdir.read_text().strip()).resolve() == path / ".git":
            return record
    raise GitError(f"{path} is not a registered worktree of {root}")
