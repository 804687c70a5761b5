"""The project's own `.agentvisor/` files, read from the start branch's committed tree with git
plumbing only: never from a checkout or worktree, which agents and uncommitted edits can change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from agentvisor.errors import InvalidInput
from agentvisor.git.git_run import GitRun, resolved, run_git

PROJECT_DIR = ".agentvisor"
SANDBOX_FILE = "sandbox.toml"
ROLES_DIR = "roles"
MAX_FILE_BYTES = 64 * 1024
MAX_ROLE_FILES = 64
_REGULAR = ("100644", "100755")
_TREE = "040000"
# A briefing is looked up by role name (or `generic`), so only such names can ever be used.
_ROLE_FILE = re.compile(r"[a-z][a-z0-9-]{0,63}\.md")


@dataclass(frozen=True)
class TreeEntry:
    """One line of `git ls-tree --long`."""

    mode: str
    kind: str  # blob | tree | commit (a submodule)
    oid: str
    size: int | None  # None for trees and submodules
    name: str


def committed_sandbox_toml(repo_root: Path, start_branch: str) -> str | None:
    """The text of `.agentvisor/sandbox.toml` on `start_branch`, None when it has none."""
    root = resolved(repo_root)
    folder = _folder(root, _branch_tree(root, start_branch), PROJECT_DIR, start_branch)
    if folder is None:
        return None
    entry = _entries(root, folder).get(SANDBOX_FILE)
    if entry is None:
        return None
    return _blob_text(root, entry, f"{PROJECT_DIR}/{SANDBOX_FILE}", start_branch)


def committed_role_briefings(repo_root: Path, start_branch: str) -> dict[str, str]:
    """`.agentvisor/roles/<name>.md` on `start_branch`, as {name: text}; {} when absent.

    Files whose names cannot be a role's are ignored; a symlink, a submodule, a file over
    MAX_FILE_BYTES, one that is not UTF-8 or more than MAX_ROLE_FILES of them are refused.
    """
    root = resolved(repo_root)
    project = _folder(root, _branch_tree(root, start_branch), PROJECT_DIR, start_branch)
    roles = project and _folder(root, project, f"{PROJECT_DIR}/{ROLES_DIR}", start_branch)
    if not roles:
        return {}
    entries = [e for name, e in _entries(root, roles).items() if _ROLE_FILE.fullmatch(name)]
    if len(entries) > MAX_ROLE_FILES:
        raise InvalidInput(
            f"{PROJECT_DIR}/{ROLES_DIR} on {start_branch} has {len(entries)} briefings, more "
            f"than the {MAX_ROLE_FILES} agentvisor reads; remove some and commit"
        )
    where = f"{PROJECT_DIR}/{ROLES_DIR}"
    return {
        e.name.removesuffix(".md"): _blob_text(root, e, f"{where}/{e.name}", start_branch)
        for e in entries
    }


def _branch_tree(root: Path, branch: str) -> str:
    ref = f"refs/heads/{branch}"
    # Fully qualified, so that no tag or other ref of the same name is read instead.
    if not branch or run_git(root, "check-ref-format", ref, check=False).status != 0:
        raise InvalidInput(f"{branch!r} is not a branch name; name the project's start branch")
    run = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{tree}}", check=False)
    if run.status != 0:
        raise InvalidInput(
            f"the start branch {branch} has no commit in {root}; commit something on it first"
        )
    return run.stdout.strip()


def _folder(root: Path, tree: str, path: str, branch: str) -> str | None:
    """The tree of the entry `path`'s last part in `tree`; None if absent, refused if no folder."""
    entry = _entries(root, tree).get(path.rsplit("/", 1)[-1])
    if entry is None:
        return None
    if entry.mode != _TREE:
        raise InvalidInput(
            f"{path} on {branch} is a {_what(entry)}, not a folder (rule committed-files-only: "
            "agentvisor follows no links); commit it as a plain folder or remove it"
        )
    return entry.oid


def _entries(root: Path, tree: str) -> dict[str, TreeEntry]:
    out = _git(root, "ls-tree", "-z", "--long", "--full-tree", tree).stdout
    entries = {}
    for record in filter(None, out.split("\0")):
        meta, _, name = record.partition("\t")
        mode, kind, oid, size = meta.split()
        entries[name] = TreeEntry(mode, kind, oid, None if size == "-" else int(size), name)
    return entries


def _blob_text(root: Path, entry: TreeEntry, path: str, branch: str) -> str:
    if entry.kind != "blob" or entry.mode not in _REGULAR:
        raise InvalidInput(
            f"{path} on {branch} is a {_what(entry)}, not a regular file (rule "
            "committed-files-only: agentvisor follows no links); commit the file itself"
        )
    if entry.size is None or entry.size > MAX_FILE_BYTES:
        raise InvalidInput(
            f"{path} on {branch} is {entry.size} bytes, more than the {MAX_FILE_BYTES} agentvisor "
            "reads; make it smaller"
        )
    text = _git(root, "cat-file", "blob", entry.oid).stdout
    # run_git decodes with errors="replace": a byte that is not UTF-8 shows as U+FFFD (and a
    # real U+FFFD has no business in these files either).
    if "\ufffd" in text:
        raise InvalidInput(f"{path} on {branch} is not valid UTF-8; save it as UTF-8")
    return text


def _what(entry: TreeEntry) -> str:
    if entry.mode == "120000":
        return "symbolic link"
    return {"commit": "submodule", "tree": "folder"}.get(entry.kind, f"file of mode {entry.mode}")


def _git(root: Path, *args: str, check: bool = True) -> GitRun:
    # Plumbing on objects only: no work tree, index, attributes, filters or textconv are read,
    # and replace refs cannot substitute another tree for the branch's.
    return run_git(root, "--no-replace-objects", *args, check=check)
