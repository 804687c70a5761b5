"""From the old layout (agents in linked worktrees sharing the project's `.git`, agentvisor
0.1) to one repository per agent: `agentvisor migrate`.

Per old worktree: its folder is kept beside as `<role>.before-migration`, the project's record
of it is deleted (no git command reads what the agent could write there), a clone of the
agent's branch takes its place and gets the old folder's files (uncommitted work stays
uncommitted). Then the project's `.git` is given back to its owner, and files the sandbox
wrote where git reads configuration or commands are moved aside and named.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentvisor.errors import GitError
from agentvisor.git.git_run import resolved
from agentvisor.git.refs import git_common_dir
from agentvisor.git.worktrees import ensure_worktree, give_to, is_old_layout, worktrees_dir

KEPT_SUFFIX = ".before-migration"
QUARANTINE_SUFFIX = ".agentvisor-quarantine"
# Files the old layout's sandboxes could write where git reads filter drivers or other
# repositories' objects from; git makes neither by itself, so either is set aside.
_STEERING = ("info/attributes", "objects/info/alternates")


@dataclass
class MigrationReport:
    migrated: list[str] = field(default_factory=list)  # roles
    kept: list[Path] = field(default_factory=list)  # the old folders
    quarantined: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def old_layout_roles(repo_root: Path | str) -> list[str]:
    folder = worktrees_dir(repo_root)
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in folder.iterdir() if is_old_layout(entry))


def migrate(
    repo_root: Path | str,
    start_branch: str,
    owner: tuple[int, int] | None,
) -> MigrationReport:
    """Move every old-layout worktree of the project to a clone of its own; see the module."""
    root = resolved(repo_root)
    common = _common_dir_unchecked(root)
    report = MigrationReport()
    _give_back(root, common, report)  # before any git runs there again
    for role in old_layout_roles(root):
        old = worktrees_dir(root) / role
        kept = old.with_name(f"{role}{KEPT_SUFFIX}")
        if kept.exists():
            kept = old.with_name(f"{role}{KEPT_SUFFIX}-{int(time.time())}")
        os.replace(old, kept)
        (kept / ".git").unlink(missing_ok=True)
        for record in _records_of(common, old):
            shutil.rmtree(record)
        clone = ensure_worktree(root, role, start_branch, owner=owner)
        shutil.copytree(
            kept,
            clone.path,
            symlinks=True,
            dirs_exist_ok=True,
            ignore=_skip_git,
            copy_function=_copy,
        )
        if owner is not None:
            give_to(clone.path, *owner)
        report.migrated.append(role)
        report.kept.append(kept)
    return report


def _common_dir_unchecked(root: Path) -> Path:
    """The project's `.git` folder before its ownership is mended (git would refuse to say)."""
    dot_git = root / ".git"
    if dot_git.is_dir() and not dot_git.is_symlink():
        return dot_git.resolve()
    return git_common_dir(root)


def _records_of(common: Path, worktree: Path) -> list[Path]:
    """The project's records (`.git/worktrees/<name>`) whose `gitdir` names `worktree`."""
    records = common / "worktrees"
    found = []
    for record in sorted(records.iterdir()) if records.is_dir() else ():
        gitdir = record / "gitdir"
        if gitdir.is_file() and not gitdir.is_symlink():
            named = (record / gitdir.read_text(errors="replace").strip()).resolve()
            if named == worktree / ".git":
                found.append(record)
    return found


def _skip_git(folder: str, names: list[str]) -> list[str]:
    return [".git"] if ".git" in names else []


def _copy(source: str, target: str) -> None:
    shutil.copy2(source, target, follow_symlinks=False)


def _give_back(root: Path, common: Path, report: MigrationReport) -> None:
    """Hand the project's `.git` back to the owner of the project folder, and set aside what
    a sandbox may have planted where git reads filters or objects (an operator who made one
    of them puts it back by hand)."""
    info = root.stat()
    for relative in _STEERING:
        path = common / relative
        if path.is_file() or path.is_symlink():
            aside = path.with_name(path.name + QUARANTINE_SUFFIX)
            os.replace(path, aside)
            report.quarantined.append(aside)
    if os.getuid() != 0:
        return
    for folder, dirs, files in os.walk(common):
        for name in (".", *dirs, *files):
            path = Path(folder) / name
            stat = path.lstat()
            if (stat.st_uid, stat.st_gid) != (info.st_uid, info.st_gid):
                try:
                    os.chown(path, info.st_uid, info.st_gid, follow_symlinks=False)
                except OSError as error:
                    raise GitError(f"cannot give {path} back to its owner: {error}") from error
