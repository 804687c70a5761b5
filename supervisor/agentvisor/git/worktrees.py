"""One repository of its own per agent, beside the project's: `<project>-worktrees/<role>`.

Each agent works in a clone of the project (its own `.git`, nothing shared with the project's),
on the branch `agent/<role>`. Its commits reach the project only through the host API's git
channel (agentvisor.git.git_http). The host never runs git with anything the agent wrote: the
clone is read as data (its HEAD file) or through a git dir agentvisor makes (`uncommitted_paths`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agentvisor.errors import Conflict, GitError, InvalidInput
from agentvisor.git.git_run import GitRun, resolved, run_git
from agentvisor.git.refs import branch_exists, branch_tip, git_common_dir

AGENT_BRANCH_PREFIX = "agent/"
WORKTREES_SUFFIX = "-worktrees"
# Where an agent's git finds the project: the shim's end of the channel to the host API.
CHANNEL_REMOTE_URL = "http://127.0.0.1:7399/git/project.git"
_ROLE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_OID = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
_MAX_HEAD_BYTES = 4096
_MAX_PACKED_REFS_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Worktree:
    """An agent's working copy: its folder (a clone of its own) and its branch."""

    path: Path
    branch: str
    created: bool = False

    @property
    def role(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class _Registration:
    """One entry of `git worktree list` of the project (the operator's own worktrees)."""

    path: Path
    head: str | None
    branch: str | None
    prunable: bool


def agent_branch(role: str) -> str:
    return f"{AGENT_BRANCH_PREFIX}{role}"


def worktrees_dir(repo_root: Path | str) -> Path:
    """`<repo>-worktrees`, the sibling folder holding one working copy per agent."""
    root = resolved(repo_root)
    return root.parent / f"{root.name}{WORKTREES_SUFFIX}"


def worktree_path(repo_root: Path | str, role: str) -> Path:
    _check_role(role)
    return worktrees_dir(repo_root) / role


def _check_role(role: str) -> None:
    if not _ROLE_PATTERN.fullmatch(role):
        raise InvalidInput(
            f"the role {role!r} cannot name a folder and a branch; use 1 to 64 "
            "letters, digits, '-' or '_', starting with a letter or digit"
        )


def agent_folder_holding(path: Path) -> tuple[Path, Path] | None:
    """(the agent's folder, the project) when `path` (resolved) is in a folder of
    `<project>-worktrees`, at any depth: everything there an agent can write."""
    for folder in (path, *path.parents):
        holder = folder.parent
        if holder.name.endswith(WORKTREES_SUFFIX) and holder.name != WORKTREES_SUFFIX:
            project = holder.parent / holder.name.removesuffix(WORKTREES_SUFFIX)
            if (project / ".git").exists():
                return folder, project
    return None


def is_agent_clone(path: Path) -> bool:
    """A folder holding a repository of its own (a `.git` folder, not a link or a file)."""
    git_dir = path / ".git"
    return path.is_dir() and not path.is_symlink() and git_dir.is_dir() and not git_dir.is_symlink()


def is_old_layout(path: Path) -> bool:
    """A linked worktree of the project, as agentvisor 0.1 made them (`.git` is a file)."""
    git_file = path / ".git"
    return git_file.is_file() and not git_file.is_symlink()


def ensure_worktree(
    repo_root: Path | str,
    role: str,
    start_branch: str,
    owner: tuple[int, int] | None = None,
) -> Worktree:
    """The agent's clone on branch `agent/<role>`, made if missing.

    The branch is made in the project from `start_branch` when missing; an existing branch is
    reused as it is (never reset), so an agent keeps its work across runs. `owner` (uid, gid)
    receives the new clone (a root host hands it to the sandbox user); nothing else changes hands.
    """
    root = resolved(repo_root)
    path, branch = worktree_path(root, role), agent_branch(role)
    if is_old_layout(path):
        raise Conflict(
            f"{path} is a worktree of the old layout that shares the project's .git with the "
            f"sandbox; run `agentvisor migrate` to give each agent a repository of its own"
        )
    if is_agent_clone(path):
        return Worktree(path, branch, created=False)
    if path.exists() or path.is_symlink():
        raise GitError(
            f"{path} exists but is not an agent's repository; move it away or delete "
            "it, then try again"
        )
    if not branch_exists(root, branch):
        if not branch_exists(root, start_branch):
            raise GitError(f"the start branch {start_branch} does not exist in {root}")
        run_git(root, "branch", "--no-track", branch, f"refs/heads/{start_branch}")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{role}-", suffix=".agentvisor-new", dir=path.parent))
    try:
        _clone(root, staging, branch, start_branch)
        if owner is not None:
            give_to(staging, *owner)
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when all went well
    return Worktree(path, branch, created=True)


def _clone(root: Path, target: Path, branch: str, start_branch: str) -> None:
    """Clone the agent's branch and the start branch (only those objects) into `target`."""
    run = run_git(
        target.parent,
        "clone",
        "--quiet",
        "--no-local",
        "--template=",
        "--single-branch",
        "--branch",
        branch,
        "--origin",
        "origin",
        f"file://{root}",
        str(target),
        config=(f"safe.directory={root}", f"safe.directory={root / '.git'}"),
        env={"GIT_LFS_SKIP_SMUDGE": "1"},
        check=False,
    )
    if run.status != 0:
        raise GitError(f"cannot make the repository of {target.name}: {run.reason}")
    if start_branch != branch:
        run_git(
            target,
            "fetch",
            "--quiet",
            "--no-tags",
            "origin",
            f"+refs/heads/{start_branch}:refs/remotes/origin/{start_branch}",
        )
    for key, value in (
        ("remote.origin.url", CHANNEL_REMOTE_URL),
        ("remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*"),
        ("remote.origin.tagOpt", "--no-tags"),
        ("push.default", "upstream"),
    ):
        run_git(target, "config", "--local", key, value)


def give_to(top: Path, uid: int, gid: int) -> None:
    """Hand `top` and everything under it to `uid`:`gid`, symlinks left as links."""
    for path in _walk(top):
        try:
            os.chown(path, uid, gid, follow_symlinks=False)
        except OSError as error:
            raise GitError(
                f"cannot give {path} to uid {uid}: {error.strerror}; run as root or let the "
                "sandbox run as your own uid (sandbox_uid)"
            ) from error


def _walk(top: Path) -> list[Path]:
    found = [top]
    if top.is_dir() and not top.is_symlink():
        for folder, dirs, files in os.walk(top):
            found += [Path(folder) / name for name in (*dirs, *files)]
    return found


def remove_worktree(
    repo_root: Path | str, role: str, delete_branch: bool = False, *, force: bool = False
) -> bool:
    """Remove the agent's clone (and its branch in the project if asked); False when none.

    Uncommitted work is discarded only with `force`; so is work committed in the clone but not
    yet published to the project. `delete_branch` deletes the project's branch even when its
    commits are merged nowhere.
    """
    root = resolved(repo_root)
    path, branch = worktree_path(root, role), agent_branch(role)
    present = is_agent_clone(path)
    if is_old_layout(path):
        raise Conflict(f"{path} is a worktree of the old layout; run `agentvisor migrate` first")
    if not present and (path.exists() or path.is_symlink()):
        raise GitError(f"{path} is not an agent's repository; agentvisor leaves it alone")
    if present:
        if not force:
            _refuse_if_dirty(root, path, role)
        shutil.rmtree(path)
    if delete_branch and branch_exists(root, branch):
        run_git(root, "branch", "--delete", "--force", branch)
    _remove_if_empty(worktrees_dir(root))
    return present


def _refuse_if_dirty(root: Path, path: Path, role: str) -> None:
    changes = uncommitted_paths(root, path)
    if changes:
        raise Conflict(
            f"the working copy of {role} at {path} has {len(changes)} uncommitted "
            "change(s) (or commits that did not reach the project yet); commit them and let "
            "the agent publish them first, or remove it with force"
        )
    head = clone_head_commit(path)
    published = branch_tip(root, agent_branch(role))
    if head is not None and head != published:
        raise Conflict(
            f"the working copy of {role} at {path} has commits that did not reach the project "
            "yet; start the agent again so that it publishes them, or remove it with force"
        )


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty, or already gone: both fine
        folder.rmdir()


def list_worktrees(repo_root: Path | str) -> list[Worktree]:
    """The agents' working copies beside the project, by role."""
    folder = worktrees_dir(repo_root)
    if not folder.is_dir():
        return []
    found = [
        Worktree(entry, agent_branch(entry.name))
        for entry in folder.iterdir()
        if _ROLE_PATTERN.fullmatch(entry.name) and (is_agent_clone(entry) or is_old_layout(entry))
    ]
    return sorted(found, key=lambda worktree: worktree.role)


# --- reading an agent's clone as data ----------------------------------------------------------


def head_branch(repo_root: Path | str, path: Path) -> str | None:
    """The branch checked out in the agent's clone at `path` (None when detached or unknown),
    read from its HEAD file as text: no git runs there."""
    head = _read_small(path / ".git" / "HEAD")
    if head is None or not head.startswith("ref: refs/heads/"):
        return None
    name = head.removeprefix("ref: refs/heads/").strip()
    return name if name and "\0" not in name and ".." not in name else None


def clone_head_commit(path: Path) -> str | None:
    """The commit the clone's HEAD names, from its files (loose ref or packed-refs)."""
    git_dir = path / ".git"
    head = _read_small(git_dir / "HEAD")
    if head is None:
        return None
    if _OID.fullmatch(head):
        return head
    if not head.startswith("ref: refs/"):
        return None
    ref = head.removeprefix("ref: ").strip()
    if ".." in ref or "\0" in ref:
        return None
    loose = _read_small(git_dir / ref)
    if loose is not None:
        return loose if _OID.fullmatch(loose) else None
    packed = _read_small(git_dir / "packed-refs", _MAX_PACKED_REFS_BYTES)
    for line in (packed or "").splitlines():
        oid, _, name = line.partition(" ")
        if name == ref and _OID.fullmatch(oid):
            return oid
    return None


def _read_small(path: Path, limit: int = _MAX_HEAD_BYTES) -> str | None:
    """The first `limit` bytes of a regular file the agent may have written, as text; None
    for a link, a FIFO, a device or a folder (opened without following or blocking)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
        return file.read(limit).decode("utf-8", "replace").strip()


STATUS_TIMEOUT_S = 20.0
MAX_INDEX_BYTES = 256 * 1024 * 1024


def uncommitted_paths(repo_root: Path, worktree_path: Path) -> list[str]:
    """`git status --porcelain=v2` lines of an agent's clone: what is not yet on its branch in
    the project (changed, staged or untracked files; commits not published count as staged).

    The agent controls everything in its clone (config, hooks, `commondir`, attributes, its
    object store), so git runs with a git dir that agentvisor makes in a temporary folder: the
    project's objects only, a copy of the clone's index (a regular file, opened without
    following links or blocking), HEAD at the project's tip of the agent's branch, no config
    but ours (no system or global either), submodules ignored, and a time limit (a FIFO
    where git reads an ignore file would otherwise block it).
    """
    clone = worktree_path.resolve()
    if not is_agent_clone(clone):
        raise GitError(f"{clone} is not an agent's repository")
    root = resolved(repo_root)
    head = branch_tip(root, agent_branch(clone.name))
    with tempfile.TemporaryDirectory(prefix="agentvisor-status-") as scratch:
        git_dir = Path(scratch)
        (git_dir / "objects" / "info").mkdir(parents=True)
        (git_dir / "refs").mkdir()
        (git_dir / "objects" / "info" / "alternates").write_text(
            f"{git_common_dir(root) / 'objects'}\n"
        )
        (git_dir / "HEAD").write_text(f"{head}\n" if head else "ref: refs/heads/none\n")
        (git_dir / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = false\n")
        _copy_regular_file(clone / ".git" / "index", git_dir / "index", MAX_INDEX_BYTES)
        run = run_git(
            clone,
            "-c",
            f"core.excludesFile={os.devnull}",
            "status",
            "--porcelain=v2",
            "--untracked-files=all",
            "--ignore-submodules=all",
            "--no-renames",
            env={
                "GIT_DIR": str(git_dir),
                "GIT_WORK_TREE": str(clone),
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_OPTIONAL_LOCKS": "0",
            },
            timeout_s=STATUS_TIMEOUT_S,
        )
    return _porcelain_lines(run)


def _copy_regular_file(source: Path, target: Path, limit: int) -> None:
    """Copy `source` if it is a regular file of at most `limit` bytes; never follow a link,
    never block on a FIFO or device the agent put there."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return  # missing, a link, ...: git then sees no index, every file untracked
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            return
        if info.st_size > limit:
            raise GitError(f"{source} is over {limit // (1024 * 1024)} MiB; not read")
        with target.open("wb") as out:
            shutil.copyfileobj(file, out)


def _porcelain_lines(run: GitRun) -> list[str]:
    return [line for line in run.stdout.splitlines() if line and not line.startswith("#")]


# --- the operator's own worktrees of the project -----------------------------------------------


def checked_out_at(repo_root: Path | str, branch: str) -> Path | None:
    """The operator's worktree (the main one included) where `branch` is checked out, if any."""
    return next(
        (entry.path for entry in _registrations(resolved(repo_root)) if entry.branch == branch),
        None,
    )


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
