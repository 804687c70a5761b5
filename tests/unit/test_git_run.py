"""Host-side git that nothing inherited or planted can steer (agentvisor.git.git_run)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentvisor.git import git_run
from agentvisor.git.git_run import hardened_env, run_git
from tests.helpers import git, make_repo


@pytest.fixture(autouse=True)
def fresh_settings_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty global config of our own, read afresh by each test."""
    config = tmp_path / "global.gitconfig"
    config.touch()
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    git_run.command_settings.cache_clear()
    yield config
    git_run.command_settings.cache_clear()


def _script(tmp_path: Path, marker: Path) -> Path:
    script = tmp_path / "planted.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 0\n")
    script.chmod(0o755)
    return script


def test_inherited_git_dir_and_work_tree_cannot_redirect_host_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = make_repo(tmp_path / "ours", "# ours\n")
    theirs = make_repo(tmp_path / "theirs", "# theirs\n")
    git(theirs, "switch", "-qc", "elsewhere")
    for key, value in {
        "GIT_DIR": str(theirs / ".git"),
        "GIT_WORK_TREE": str(theirs),
        "GIT_INDEX_FILE": str(theirs / ".git" / "index"),
        "GIT_OBJECT_DIRECTORY": str(theirs / ".git" / "objects"),
    }.items():
        monkeypatch.setenv(key, value)

    assert run_git(ours, "branch", "--show-current").stdout == "main"
    assert "GIT_DIR" not in hardened_env(ours)


def test_command_settings_of_the_repository_do_not_run(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", "# p\n")
    marker = tmp_path / "ran"
    script = _script(tmp_path, marker)
    git(repo, "config", "core.fsmonitor", str(script))
    git(repo, "config", "core.hooksPath", str(tmp_path / "hooks"))
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "post-checkout").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (tmp_path / "hooks" / "post-checkout").chmod(0o755)
    (repo / "new.txt").write_text("n\n")

    run_git(repo, "status", "--porcelain")
    run_git(repo, "switch", "--quiet", "-c", "side")

    assert not marker.exists()


def test_the_operators_own_global_settings_are_kept(
    tmp_path: Path, fresh_settings_cache: Path
) -> None:
    repo = make_repo(tmp_path / "proj", "# p\n")
    hooks = tmp_path / "my-hooks"
    hooks.mkdir()
    marker = tmp_path / "operator-hook-ran"
    (hooks / "post-checkout").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (hooks / "post-checkout").chmod(0o755)
    fresh_settings_cache.write_text(f"[core]\n\thooksPath = {hooks}\n")

    run_git(repo, "switch", "--quiet", "-c", "side")

    assert marker.exists()


def test_discovery_stops_at_the_folder_given(tmp_path: Path) -> None:
    outer = make_repo(tmp_path / "outer", "# outer\n")
    inner = outer / "not-a-repo"
    inner.mkdir()

    run = run_git(inner, "rev-parse", "--git-dir", check=False)

    assert run.status != 0 and "not a git repository" in run.stderr


def test_no_blanket_safe_directory_anywhere(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", "# p\n")
    run = run_git(repo, "config", "--show-origin", "--get-all", "safe.directory")
    assert "*" not in run.stdout.split()
    assert run.stdout.strip().endswith(str(repo))
