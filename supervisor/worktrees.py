"""The project's git repository and one worktree and branch per agent beside it.

Also what a sandbox must mount so that git works inside it without reaching the host's other
worktrees, config or hooks.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import git

from supervisor.errors import Conflict, GitError, InvalidInput, SpecError

AGENT_BRANCH_PREFIX = "agent/"
FALLBACK_IDENTITY = {"user.name": "agentvisor", "user.email": "agentvisor@localhost"}
NEW_PROJECT_SPEC_NAME = "spec.md"
_ROLE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# Files in .git that say an operation is half done in the work tree that owns that git dir.
_OPERATION_MARKERS = (
    "MERGE_HEAD",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "rebase-merge",
    "rebase-apply",
)


# --- running git -------------------------------------------------------------------------------


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


def run_git_in_worktree(repo_root: Path, worktree_path: Path, *args: str) -> GitRun:
    """Run git on the host in an agent's worktree without trusting anything the agent can write.

    The agent controls the worktree's `.git` file and, from inside its sandbox, could point it at
    a config of its own (`core.fsmonitor` runs a command). So the git dirs come from the host's
    registration, never from that file, and the commands take no optional locks so they do not
    fight the agent's own git over `index.lock`.
    """
    root = _top(repo_root)
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


def git_common_dir(repo_root: Path) -> Path:
    """The repository's shared `.git` folder (also when `repo_root` is a linked worktree)."""
    out = run_git(_top(repo_root), "rev-parse", "--path-format=absolute", "--git-common-dir")
    return Path(out.stdout.strip()).resolve()


def branch_exists(repo_root: Path, branch: str) -> bool:
    return _rev(repo_root, f"refs/heads/{branch}") is not None


def branch_tip(repo_root: Path, branch: str) -> str | None:
    """The commit a local branch points at, or None when there is no such branch."""
    return _rev(repo_root, f"refs/heads/{branch}")


def _rev(repo_root: Path, ref: str) -> str | None:
    run = run_git(
        _top(repo_root), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False
    )
    return run.stdout.strip() if run.status == 0 else None


def operation_in_progress(repo_root: Path) -> str | None:
    """The name of the marker of a merge, rebase, cherry-pick or revert left half done."""
    git_dir = Path(run_git(_top(repo_root), "rev-parse", "--absolute-git-dir").stdout.strip())
    return next((marker for marker in _OPERATION_MARKERS if (git_dir / marker).exists()), None)


def _top(path: Path | str) -> Path:
    return Path(path).resolve()


# --- the project -------------------------------------------------------------------------------


def find_project(spec_path: Path | str, project_dir: Path | str | None = None) -> Path:
    """The root of the git repository agents work on: `project_dir`, or the one holding the spec."""
    if project_dir is not None:
        return _explicit_project(Path(project_dir))
    spec = Path(spec_path).resolve()
    if not spec.is_file():
        raise SpecError(f"the spec {spec} does not exist or is not a file")
    repo = _discover(spec.parent)
    if repo is None:
        raise GitError(
            f"the spec {spec} is not inside a git repository; pass --project DIR to "
            "name the repository the agents should work on, or --new-project to "
            "create one for this spec"
        )
    return _usable_root(repo)


def _explicit_project(project_dir: Path) -> Path:
    folder = project_dir.resolve()
    if not folder.is_dir():
        raise GitError(
            f"the project folder {folder} does not exist; create it and run "
            "`git init` there, or use --new-project"
        )
    repo = _discover(folder)
    if repo is None:
        raise GitError(
            f"{folder} is not a git repository; run `git init` there and commit "
            "something, or use --new-project"
        )
    root = _usable_root(repo)
    if root != folder:
        raise GitError(
            f"{folder} is inside the git repository {root} but is not its top "
            f"folder; pass --project {root}"
        )
    return root


def _discover(start: Path) -> git.Repo | None:
    try:
        return git.Repo(start, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None


def _usable_root(repo: git.Repo) -> Path:
    if repo.bare or repo.working_tree_dir is None:
        raise GitError(
            f"{repo.git_dir} is a bare repository; agents need a checked-out one: "
            "clone it and pass --project with the clone"
        )
    root = _top(repo.working_tree_dir)
    main = Path(repo.common_dir).resolve().parent
    if root.parent == worktrees_dir(main):
        raise GitError(f"{root} is an agent's worktree of {main}; pass --project {main}")
    if not repo.head.is_valid():
        raise GitError(
            f"the project {root} has no commits yet; commit something first "
            "(agents branch off a commit)"
        )
    return root


def create_new_project(spec_path: Path | str, force: bool = False) -> Path:
    """A new repository named after the spec, next to the spec's repository (or folder).

    Its first commit holds the spec as `spec.md`. An existing folder of that name is replaced
    only with `force`, and only once the new repository is complete.
    """
    spec = Path(spec_path).resolve()
    if not spec.is_file():
        raise SpecError(f"the spec {spec} does not exist or is not a file")
    target = new_project_folder(spec)
    _check_replaceable(target, spec, force)
    try:
        staging = Path(
            tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".agentvisor-new", dir=target.parent)
        )
    except OSError as error:
        raise GitError(f"cannot create a project in {target.parent}: {error.strerror}") from error
    try:
        _init_with_spec(staging, spec)
        if target.exists() or target.is_symlink():
            _remove_path(target)
        os.replace(staging, target)
    except OSError as error:
        raise GitError(f"cannot create the project {target}: {error.strerror}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when all went well
    return target


def project_slug(spec_path: Path | str) -> str:
    """A folder name from the spec's file name: `My Todo App.md` -> `my-todo-app`."""
    stem = Path(spec_path).stem
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_stem.lower()).strip("-")[:64].strip("-")
    if not slug:
        raise InvalidInput(
            f"cannot make a project folder name from the spec's file name "
            f"{Path(spec_path).name!r}; rename it with some letters or digits"
        )
    return slug


def new_project_folder(spec: Path) -> Path:
    repo = _discover(spec.parent)
    if repo is not None and repo.working_tree_dir is not None:
        return _top(repo.working_tree_dir).parent / project_slug(spec)
    return spec.parent.parent / project_slug(spec)


def _check_replaceable(target: Path, spec: Path, force: bool) -> None:
    if not (target.exists() or target.is_symlink()):
        return
    if not force:
        raise Conflict(
            f"{target} already exists; pick it with --project {target}, or pass "
            "--force to replace it with a new project"
        )
    for precious in (spec, Path.cwd().resolve()):
        if precious.is_relative_to(target.resolve()):
            raise Conflict(
                f"refusing to replace {target}: it holds {precious}; move the spec or rename it"
            )


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _init_with_spec(folder: Path, spec: Path) -> None:
    run_git(folder, "init", "--quiet")
    _ensure_identity(folder)
    shutil.copyfile(spec, folder / NEW_PROJECT_SPEC_NAME)
    run_git(folder, "add", "--", NEW_PROJECT_SPEC_NAME)
    run_git(
        folder,
        "commit",
        "--quiet",
        "--no-verify",
        "-m",
        f"Add the spec ({spec.name}) that agentvisor works from",
    )


def _ensure_identity(repo_root: Path) -> None:
    """Give the repository a committer identity of its own when git has none configured."""
    for key, fallback in FALLBACK_IDENTITY.items():
        if run_git(repo_root, "config", "--get", key, check=False).status != 0:
            run_git(repo_root, "config", "--local", key, fallback)


def start_branch(repo: Path | str) -> str:
    """The branch checked out in `repo`, which agents branch off and merges come back to."""
    root = _top(repo)
    run = run_git(root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if run.status != 0:
        raise GitError(
            f"{root} has a detached HEAD; check out the branch the agents should "
            "start from (git switch BRANCH) and try again"
        )
    branch = run.stdout.strip()
    if not branch_exists(root, branch):
        raise GitError(f"the branch {branch} in {root} has no commits yet; commit something first")
    return branch


# --- agent worktrees ---------------------------------------------------------------------------


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
    root = _top(repo_root)
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
    root = _top(repo_root)
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
    root = _top(repo_root)
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
    root = _top(repo_root)
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
        (entry.path for entry in _registrations(_top(repo_root)) if entry.branch == branch), None
    )


def head_branch(repo_root: Path | str, path: Path) -> str | None:
    """The branch checked out in the registered worktree at `path` (None when detached)."""
    entry = _registration_at(_top(repo_root), path)
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


# --- what a sandbox mounts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """A bind mount: host `source` at `target` in the sandbox."""

    source: Path
    target: Path
    read_only: bool


def admin_dir(repo_root: Path | str, worktree: Worktree | Path) -> Path:
    """`.git/worktrees/<name>`, the host's record of a worktree, found from the host's side.

    git names the record after the folder, with a number added on a clash, so it is looked up
    by the `gitdir` file inside it rather than guessed or read from the worktree's `.git` file.
    """
    root = _top(repo_root)
    path = (worktree.path if isinstance(worktree, Worktree) else worktree).resolve()
    records = git_common_dir(root) / "worktrees"
    for record in sorted(records.iterdir()) if records.is_dir() else ():
        gitdir = record / "gitdir"
        # Relative when git is set to write relative worktree paths (2.48+): from the record.
        if gitdir.is_file() and (record / gitdir.read_text().strip()).resolve() == path / ".git":
            return record
    raise GitError(f"{path} is not a registered worktree of {root}")


def git_mounts(repo_root: Path | str, worktree: Worktree | Path) -> list[Mount]:
    """The mounts, in order, that let git work in a sandbox, each at its host path.

    The `.git` folder is writable for objects and refs; the other worktrees' records, the
    config and the hooks are not, so nothing inside can unregister the host's worktrees or plant
    a hook or a config command that the host would run. The worktree's own record is writable
    except the files that tell the host where things are. Missing `hooks/` and
    `config.worktree` are created (empty) so that they can be mounted read-only.
    """
    root = _top(repo_root)
    common = git_common_dir(root)
    admin = admin_dir(root, worktree)
    hooks = common / "hooks"
    hooks.mkdir(exist_ok=True)
    (admin / "config.worktree").touch(exist_ok=True)
    layers = [
        (common, False),
        (common / "worktrees", True),
        (admin, False),
        (admin / "gitdir", True),
        (admin / "commondir", True),
        (admin / "config.worktree", True),
        (common / "config", True),
        (hooks, True),
    ]
    return [Mount(path, path, read_only) for path, read_only in layers]


def chown_for_sandbox(paths: Iterable[Path], uid: int, gid: int) -> None:
    """Give `paths` and everything under them to the sandbox user, symlinks left as links.

    Only for a root host whose sandboxes run as another uid: pass the worktree and
    `git_common_dir(repo_root)`. git run by root afterwards creates root-owned files there again
    (new object folders), so call it again after host-side commits or merges.
    """
    trust_handed_over_repositories()
    for top in paths:
        for path in _walk(Path(top)):
            try:
                os.chown(path, uid, gid, follow_symlinks=False)
            except OSError as error:
                raise GitError(
                    f"cannot give {path} to uid {uid}: {error.strerror}; run as "
                    "root or let the sandbox run as your own uid"
                ) from error


def trust_handed_over_repositories() -> None:
    """Let this (root) process and its children keep using repositories it handed to the
    sandbox uid: git refuses a repository owned by someone else unless told it is safe. Only the
    environment of this process changes, never a git config file (see docs/troubleshooting.md
    for the same in the user's own shell)."""
    key = "safe.directory"
    count = int(os.environ.get("GIT_CONFIG_COUNT", "0") or 0)
    for index in range(count):
        if (
            os.environ.get(f"GIT_CONFIG_KEY_{index}") == key
            and os.environ.get(f"GIT_CONFIG_VALUE_{index}") == "*"
        ):
            return
    os.environ[f"GIT_CONFIG_KEY_{count}"] = key
    os.environ[f"GIT_CONFIG_VALUE_{count}"] = "*"
    os.environ["GIT_CONFIG_COUNT"] = str(count + 1)


def _walk(top: Path) -> Iterable[Path]:
    yield top
    if top.is_dir() and not top.is_symlink():
        for folder, dirs, files in os.walk(top):
            for name in (*dirs, *files):
                yield Path(folder) / name
