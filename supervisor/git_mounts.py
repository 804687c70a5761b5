"""What a sandbox mounts so that git works inside it without reaching the host's other
worktrees, config or hooks, and handing those files over to the sandbox's user."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from supervisor.errors import GitError
from supervisor.git_run import git_common_dir, resolved
from supervisor.worktrees import Worktree, admin_dir


@dataclass(frozen=True)
class Mount:
    """A bind mount: host `source` at `target` in the sandbox."""

    source: Path
    target: Path
    read_only: bool


def git_mounts(repo_root: Path | str, worktree: Worktree | Path) -> list[Mount]:
    """The mounts, in order, that let git work in a sandbox, each at its host path.

    The `.git` folder is writable for objects and refs; the other worktrees' records, the
    config and the hooks are not, so nothing inside can unregister the host's worktrees or plant
    a hook or a config command that the host would run. The worktree's own record is writable
    except the files that tell the host where things are. Missing `hooks/` and
    `config.worktree` are created (empty) so that they can be mounted read-only.
    """
    root = resolved(repo_root)
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
