"""A project's `.agentvisor/` files as committed on its start branch: real throwaway git
repositories, committed trees only, every odd entry an agent could commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentvisor.errors import InvalidInput
from agentvisor.git.project_files import (
    MAX_FILE_BYTES,
    MAX_ROLE_FILES,
    committed_role_briefings,
    committed_sandbox_toml,
)
from tests.helpers import git, make_repo


def commit_all(repo: Path, message: str = "change") -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "project", files={"README.md": "hello\n"}, message="first")


def roles(repo: Path, **files: str | bytes) -> Path:
    folder = repo / ".agentvisor" / "roles"
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        path = folder / name.replace("_", "-")
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return folder


def test_nothing_committed_reads_as_nothing(repo):
    assert committed_sandbox_toml(repo, "main") is None
    assert committed_role_briefings(repo, "main") == {}


def test_committed_files_are_read_and_the_checkout_is_not(repo):
    roles(repo, **{"developer.md": "Committed {role}.\n"})
    (repo / ".agentvisor" / "sandbox.toml").write_text("pids = 100\n")
    commit_all(repo)
    (repo / ".agentvisor" / "sandbox.toml").write_text("pids = 1\n")
    roles(repo, **{"developer.md": "Edited.", "tester.md": "Never committed."})

    assert committed_sandbox_toml(repo, "main") == "pids = 100"  # git drops the last newline
    assert committed_role_briefings(repo, "main") == {"developer": "Committed {role}."}


def test_only_the_named_branch_is_read_even_when_a_tag_has_its_name(repo):
    git(repo, "switch", "-qc", "agent/developer")
    roles(repo, **{"developer.md": "Forged."})
    commit_all(repo)
    git(repo, "tag", "main")  # `main` alone would name this tag before the branch
    git(repo, "switch", "-q", "main")

    assert committed_role_briefings(repo, "main") == {}
    assert committed_role_briefings(repo, "agent/developer") == {"developer": "Forged."}


@pytest.mark.parametrize("branch", ["", "no..such", "ghost", "-x"])
def test_a_start_branch_that_is_no_branch_with_commits_is_named(repo, branch):
    with pytest.raises(InvalidInput, match=r"not a branch name|has no commit"):
        committed_sandbox_toml(repo, branch)


def test_names_that_cannot_be_a_role_are_ignored(repo):
    roles(
        repo,
        **{"developer.md": "Dev.", "README.txt": "x", "Developer.md": "x", "notes.md.bak": "x"},
    )
    (repo / ".agentvisor" / "roles" / "sub").mkdir()
    (repo / ".agentvisor" / "roles" / "sub" / "tester.md").write_text("x")
    commit_all(repo)
    assert committed_role_briefings(repo, "main") == {"developer": "Dev."}


def test_symlinks_are_refused_never_followed(repo, tmp_path):
    secret = tmp_path / "secret.md"
    secret.write_text("host secret\n")
    folder = roles(repo)
    (folder / "developer.md").symlink_to(secret)
    commit_all(repo)
    with pytest.raises(InvalidInput, match=r"roles/developer\.md on main is a symbolic link"):
        committed_role_briefings(repo, "main")


def test_a_symlinked_agentvisor_folder_is_refused(repo, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "roles").mkdir(parents=True)
    (elsewhere / "sandbox.toml").write_text("pids = 1\n")
    (repo / ".agentvisor").symlink_to(elsewhere)
    commit_all(repo)
    with pytest.raises(InvalidInput, match=r"\.agentvisor on main is a symbolic link"):
        committed_sandbox_toml(repo, "main")


def test_a_folder_where_a_file_should_be_is_refused(repo):
    (repo / ".agentvisor" / "sandbox.toml").mkdir(parents=True)
    (repo / ".agentvisor" / "sandbox.toml" / "x").write_text("x")
    commit_all(repo)
    with pytest.raises(InvalidInput, match="is a folder, not a regular file"):
        committed_sandbox_toml(repo, "main")


def test_oversized_and_non_utf8_files_are_refused(repo):
    roles(repo, **{"developer.md": "x" * (MAX_FILE_BYTES + 1), "tester.md": b"caf\xe9"})
    commit_all(repo)
    with pytest.raises(InvalidInput, match=f"more than the {MAX_FILE_BYTES}"):
        committed_role_briefings(repo, "main")
    git(repo, "rm", "-q", ".agentvisor/roles/developer.md")
    commit_all(repo)
    with pytest.raises(InvalidInput, match=r"tester\.md on main is not valid UTF-8"):
        committed_role_briefings(repo, "main")


def test_a_file_at_the_size_limit_is_read(repo):
    (repo / ".agentvisor").mkdir()
    (repo / ".agentvisor" / "sandbox.toml").write_text("#" * MAX_FILE_BYTES)
    commit_all(repo)
    assert committed_sandbox_toml(repo, "main") == "#" * MAX_FILE_BYTES


def test_too_many_role_files_are_refused(repo):
    roles(repo, **{f"role-{n}.md": "x" for n in range(MAX_ROLE_FILES + 1)})
    commit_all(repo)
    with pytest.raises(InvalidInput, match=f"more than the {MAX_ROLE_FILES}"):
        committed_role_briefings(repo, "main")


def test_git_attributes_and_filters_of_the_checkout_never_run(repo, tmp_path):
    marker = tmp_path / "ran"
    git(repo, "config", "filter.evil.smudge", f"touch {marker}; cat")
    git(repo, "config", "core.fsmonitor", f"touch {marker}; false")
    (repo / ".gitattributes").write_text("*.md filter=evil\n*.toml filter=evil\n")
    roles(repo, **{"developer.md": "Dev."})
    (repo / ".agentvisor" / "sandbox.toml").write_text("pids = 1\n")
    commit_all(repo)
    marker.unlink(missing_ok=True)  # `git add` itself may have run the fsmonitor

    assert committed_sandbox_toml(repo, "main") == "pids = 1"
    assert committed_role_briefings(repo, "main") == {"developer": "Dev."}
    assert not marker.exists()
