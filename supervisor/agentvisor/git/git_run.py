"""The hardened runner: every git process agentvisor starts on the host (but `git http-backend`,
which git_http gives an environment of its own) runs through `run_git`."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentvisor.errors import GitError


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


# Settings that make git run a command, off for every git agentvisor runs unless the operator's
# own global config sets them (hooks of the project are the operator's, but agentvisor's
# merges and checks have no need of them).
_COMMAND_SETTINGS = {
    "core.fsmonitor": "false",
    "core.hooksPath": os.devnull,
    "core.sshCommand": "ssh",
    "protocol.ext.allow": "never",
    "submodule.recurse": "false",
    "fetch.recurseSubmodules": "false",
}
# Inherited variables that would point git at another repository than the one named (set, for
# example, when agentvisor is started from a git hook). The operator's own settings stay.
_LOCATION_ENV = frozenset(
    {
        "GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_QUARANTINE_PATH",
        "GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM", "GIT_REPLACE_REF_BASE",
        "GIT_GRAFT_FILE", "GIT_SHALLOW_FILE",
    }
)  # fmt: skip


def hardened_env(cwd: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for host-side git in the operator's repository at `cwd`.

    Nothing inherited can point it elsewhere (GIT_DIR, GIT_INDEX_FILE ... are dropped),
    repository discovery stops at `cwd`'s parent, and `extra` (ours) is added last.
    """
    env = {key: value for key, value in os.environ.items() if key not in _LOCATION_ENV}
    env["GIT_CEILING_DIRECTORIES"] = str(cwd.resolve().parent)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_NO_REPLACE_OBJECTS"] = "1"
    env.update(extra or {})
    return env


@functools.cache
def command_settings() -> tuple[str, ...]:
    """`-c` values that switch off git's command-running settings, except those the operator's
    own global config sets (read from that file alone, never from a repository); read once
    per process."""
    run = _execute(["git", "config", "--global", "--name-only", "--list"], Path("/"), {})
    operator = {line.strip().lower() for line in run.stdout.splitlines()}
    return tuple(
        f"{key}={value}" for key, value in _COMMAND_SETTINGS.items() if key.lower() not in operator
    )


@functools.cache
def git_version() -> tuple[int, ...]:
    """The version of the git on PATH (`git version 2.39.5` -> (2, 39, 5)), () if unreadable;
    asked once per process, outside any repository."""
    words = _execute(["git", "version"], Path("/"), {}).stdout.split()
    numbers: list[int] = []
    for part in (words[2] if len(words) > 2 else "").split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def run_git(
    cwd: Path,
    *args: str,
    config: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout_s: float | None = None,
) -> GitRun:
    """Run `git ARGS` in `cwd`, a top folder agentvisor manages; GitError on failure if `check`
    (and when it runs longer than `timeout_s`).

    Hardened (docs/sandboxes.md): an environment nothing inherited can steer, no discovery
    above `cwd`, command-running settings off, and `safe.directory` for `cwd` alone (a root
    operator may run agentvisor on a repository that belongs to their own login).
    """
    if not cwd.is_dir():  # a GitError that says so, not subprocess's FileNotFoundError
        raise GitError(f"{cwd} does not exist or is not a folder")
    command = ["git", "-c", f"safe.directory={cwd.resolve()}"]
    for setting in (*command_settings(), *config):
        command += ["-c", setting]
    run = _execute([*command, *args], cwd, env or {}, timeout_s)
    if check and run.status != 0:
        raise GitError(f"git {args[0]} failed in {cwd}: {run.reason}")
    return run


def _execute(
    argv: list[str], cwd: Path, extra: Mapping[str, str], timeout_s: float | None = None
) -> GitRun:
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=hardened_env(cwd, extra),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return GitRun(124, "", f"fatal: git {argv[-1]} took longer than {timeout_s:.0f} s")
    return GitRun(
        done.returncode,
        done.stdout.decode("utf-8", "replace").rstrip("\n"),
        done.stderr.decode("utf-8", "replace"),
    )


def resolved(path: str | os.PathLike[str]) -> Path:
    """`path` made absolute with its symlinks resolved: one spelling per folder."""
    return Path(path).resolve()


def is_ancestor(repo_root: Path, ancestor: str, descendant: str) -> bool:
    """True when `ancestor` is `descendant` or one of its ancestors."""
    run = run_git(
        resolved(repo_root), "merge-base", "--is-ancestor", ancestor, descendant, check=False
    )
    return run.status == 0
