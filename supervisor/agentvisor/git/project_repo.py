"""The project's git repository: found from the spec (or made for it), and its start branch."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path

from agentvisor.errors import Conflict, GitError, InvalidInput, SpecError
from agentvisor.git.git_run import resolved, run_git
from agentvisor.git.refs import FileRepo, branch_exists, discover, head_branch, head_commit
from agentvisor.git.worktrees import agent_folder_holding

FALLBACK_IDENTITY = {"user.name": "agentvisor", "user.email": "agentvisor@localhost"}
NEW_PROJECT_SPEC_NAME = "spec.md"


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


def _discover(start: Path) -> FileRepo | None:
    """The repository holding `start`, searched upwards with GitPython (no git runs). Refused
    inside an agent's folder before anything there is read: the agent wrote all of it, a
    repository's config included."""
    _refuse_agent_folder(start)
    return discover(start)


def _refuse_agent_folder(path: Path) -> None:
    held = agent_folder_holding(path)
    if held is not None:
        folder, main = held
        where = "" if folder == path else f" (in {folder})"
        raise GitError(
            f"{path}{where} is an agent's worktree of {main}: agentvisor reads no repository "
            f"an agent can write; pass --project {main}, or copy the spec out of that folder"
        )


def _usable_root(repo: FileRepo) -> Path:
    if repo.bare or repo.working_tree_dir is None:
        raise GitError(
            f"{repo.git_dir} is a bare repository; agents need a checked-out one: "
            "clone it and pass --project with the clone"
        )
    root = resolved(repo.working_tree_dir)
    _refuse_agent_folder(root)  # core.worktree may name another folder than the one searched
    if head_commit(repo) is None:
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
        return resolved(repo.working_tree_dir).parent / project_slug(spec)
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
    root = resolved(repo)
    branch = head_branch(root)
    if branch is None:
        raise GitError(
            f"{root} has a detached HEAD; check out the branch the agents should "
            "start from (git switch BRANCH) and try again"
        )
    if not branch_exists(root, branch):
        raise GitError(f"the branch {branch} in {root} has no commits yet; commit something first")
    return branch
