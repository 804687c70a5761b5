"""The sandbox's container spec and the rules no caller or project can bend, without Docker:
real throwaway git repositories and state folders only."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from agentvisor.config import Settings
from agentvisor.core.sandbox_status import cpu_percent, health_of, memory_mb, parse_docker_time
from agentvisor.errors import EngineUnavailable, SandboxError
from agentvisor.git.refs import git_common_dir
from agentvisor.git.worktrees import ensure_worktree
from agentvisor.sandbox.docker_engine import docker_client
from agentvisor.sandbox.mounts import Mount
from agentvisor.sandbox.sandbox_sockets import sandbox_socket_dir
from agentvisor.sandbox.sandbox_spec import (
    LABEL_CONFIG,
    SandboxSpec,
    build_spec,
    container_name,
    gather_spec_inputs,
    token_file_path,
)
from agentvisor.sandbox.sandbox_tokens import write_token_file
from agentvisor.sandbox.sandboxes import last_lines

PROJECT, ROLE = "shop", "developer"


def commit(repo: Path, files: dict[str, str], message: str = "change") -> None:
    """Write `files` ({path: text}) in `repo`'s checkout and commit them on its branch."""
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text, encoding="utf-8")
    git = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", "-C", str(repo)]
    subprocess.run([*git, "add", "--", *files], check=True)
    subprocess.run([*git, "commit", "-qm", message], check=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "shop"
    path.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    commit(path, {"README.md": "hello\n", "data/fixtures.json": "{}\n"}, "first")
    return path.resolve()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    state = tmp_path / "state"
    (state / "sock").mkdir(parents=True)
    return Settings(
        state_dir=state,
        image="agentvisor/sandbox:test",
        memory_mb=2048,
        cpus=1.5,
        pids=300,
        tmpfs_mb=256,
        sandbox_uid=1234,
        sandbox_gid=2345,
    )


@pytest.fixture
def worktree(repo: Path) -> Path:
    ensure_worktree(repo, ROLE, "main")
    ensure_worktree(repo, "tester", "main")
    return ensure_worktree(repo, ROLE, "main").path


@pytest.fixture
def token(settings: Settings) -> Path:
    return write_token_file(settings, PROJECT, ROLE, "ava_secret")


def spec_for(settings: Settings, repo: Path, worktree: Path, token: Path, **kwargs) -> SandboxSpec:
    options = {"profile": "demo", **kwargs}
    return build_spec(
        gather_spec_inputs(
            settings,
            project=PROJECT,
            role=ROLE,
            worktree=worktree,
            repo_root=repo,
            token_file=token,
            **options,
        )
    )


# --- what the spec holds -----------------------------------------------------------------------


def test_spec_names_labels_and_contract_environment(settings, repo, worktree, token):
    spec = spec_for(settings, repo, worktree, token)

    assert spec.name == "agentvisor-shop-developer" == container_name(PROJECT, ROLE)
    assert spec.network_mode == "none"
    assert spec.home_volume == "agentvisor-home-shop-developer"
    assert spec.labels["agentvisor.project"] == PROJECT
    assert spec.labels["agentvisor.role"] == ROLE
    assert spec.labels["agentvisor.managed"] == "1"
    assert spec.labels["agentvisor.state_dir"] == str(settings.state_dir.resolve())
    assert spec.env["AGENTVISOR_SOCKET"] == "/run/agentvisor/api/api.sock"  # its own
    assert spec.env["AGENTVISOR_TOKEN_FILE"] == "/run/agentvisor/token"
    assert spec.env["AGENTVISOR_PROJECT"] == PROJECT
    assert spec.env["AGENTVISOR_ROLE"] == ROLE
    assert spec.env["AGENTVISOR_PROFILE"] == "demo"
    assert spec.env["AGENTVISOR_WORKDIR"] == "/workspace"
    assert spec.env["HOME"] == "/home/agent"
    assert "AGENTVISOR_AGENT_COMMAND" not in spec.env


def test_every_http_client_in_the_sandbox_goes_through_the_egress_relay_as_this_agent(
    settings, repo, worktree, token
):
    spec = spec_for(settings, repo, worktree, token)
    secret = token.read_text().strip()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert spec.env[name] == f"http://agent:{secret}@127.0.0.1:7398"
    assert spec.env["NO_PROXY"] == spec.env["no_proxy"] == "127.0.0.1,localhost"
    assert spec.env["AGENTVISOR_EGRESS_PORT"] == "7398"


def test_a_token_file_that_holds_no_token_is_refused(settings, repo, worktree, token):
    token.write_text("agt x@evil:1/\n")
    with pytest.raises(SandboxError, match="does not hold a token"):
        spec_for(settings, repo, worktree, token)


def test_spec_mounts_the_agents_own_clone_and_nothing_of_the_projects_git(
    settings, repo, worktree, token
):
    spec = spec_for(settings, repo, worktree, token)
    common = git_common_dir(repo)

    assert not any(Path(m.source).is_relative_to(common) for m in spec.mounts if m.kind == "bind")
    assert [(m.kind, m.source, m.target, m.read_only) for m in spec.mounts] == [
        ("bind", str(worktree), "/workspace", False),
        ("bind", str(settings.socket_dir.resolve()), "/run/agentvisor/sock", False),
        (
            "bind",
            str(sandbox_socket_dir(settings, "shop", "developer").resolve()),
            "/run/agentvisor/api",
            False,
        ),
        ("bind", str(token.resolve()), "/run/agentvisor/token", True),
        ("volume", "agentvisor-home-shop-developer", "/home/agent", False),
    ]
    assert not any("docker.sock" in m.source for m in spec.mounts)


def test_spec_is_locked_down_with_the_settings_limits(settings, repo, worktree, token):
    kwargs = spec_for(settings, repo, worktree, token).create_kwargs()

    assert kwargs["user"] == "1234:2345"
    assert kwargs["cap_drop"] == ["ALL"]
    assert "cap_add" not in kwargs
    assert kwargs["security_opt"] == ["no-new-privileges:true"]
    assert kwargs["init"] is True
    assert kwargs["read_only"] is True
    assert kwargs["privileged"] is False
    assert kwargs["network_mode"] == "none"  # loopback only: no bridge, no DNS
    assert "network" not in kwargs
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == "2048m"
    assert kwargs["nano_cpus"] == 1_500_000_000
    assert kwargs["pids_limit"] == 300
    assert kwargs["restart_policy"] == {"Name": "unless-stopped", "MaximumRetryCount": 0}
    assert "size=256m" in kwargs["tmpfs"]["/tmp"]
    assert "size=64m" in kwargs["tmpfs"]["/run"]
    assert "volumes" not in kwargs


def test_generic_profile_passes_command_and_ready_pattern(settings, repo, worktree, token):
    generic = Settings(**{**vars(settings), "agent_command": "aider", "ready_pattern": "^> $"})
    spec = spec_for(generic, repo, worktree, token, profile="generic")

    assert spec.env["AGENTVISOR_AGENT_COMMAND"] == "aider"
    assert spec.env["AGENTVISOR_READY_PATTERN"] == "^> $"
    with pytest.raises(SandboxError, match="generic profile needs"):
        spec_for(settings, repo, worktree, token, profile="generic")


@pytest.mark.parametrize("profile", ["auto", "gpt", ""])
def test_unknown_or_unresolved_profile_is_refused(settings, repo, worktree, token, profile):
    with pytest.raises(SandboxError, match="unknown agent profile"):
        spec_for(settings, repo, worktree, token, profile=profile)


def test_fingerprint_follows_configuration_but_not_resume(settings, repo, worktree, token):
    plain = spec_for(settings, repo, worktree, token)
    again = spec_for(settings, repo, worktree, token)
    resumed = spec_for(settings, repo, worktree, token, resume=True)
    changed = spec_for(settings, repo, worktree, token, extra_env={"FOO": "1"})

    assert plain.labels[LABEL_CONFIG] == again.labels[LABEL_CONFIG]
    assert resumed.env["AGENTVISOR_RESUME"] == "1"
    assert resumed.labels[LABEL_CONFIG] == plain.labels[LABEL_CONFIG]
    assert changed.labels[LABEL_CONFIG] != plain.labels[LABEL_CONFIG]


def test_missing_token_file_or_worktree_is_named(settings, repo, worktree, token):
    with pytest.raises(SandboxError, match=r"token file .* does not exist"):
        spec_for(settings, repo, worktree, token.with_name("nobody.token"))
    with pytest.raises(SandboxError, match=r"worktree .* does not exist"):
        spec_for(settings, repo, worktree.with_name("ghost"), token)


@pytest.mark.parametrize("name", ["", "-x", "a b", "x/y", "a" * 81])
def test_names_that_cannot_name_a_container_are_refused(settings, repo, worktree, token, name):
    with pytest.raises(SandboxError, match="cannot name a container"):
        build_spec(
            gather_spec_inputs(
                settings,
                project=name,
                role=ROLE,
                worktree=worktree,
                repo_root=repo,
                token_file=token,
                profile="demo",
            )
        )


# --- what a caller may add ---------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/home/agent/.claude-credentials.json", "/mnt/claude.json"])
def test_read_only_credential_mount_is_allowed(settings, repo, worktree, token, tmp_path, target):
    secret = tmp_path / "credentials.json"
    secret.write_text("{}")
    mount = Mount(secret, Path(target), True)
    spec = spec_for(settings, repo, worktree, token, credential_mounts=[mount])

    assert spec.mounts[-1].source == str(secret)
    assert spec.mounts[-1].target == target
    assert spec.mounts[-1].read_only is True


@pytest.mark.parametrize(
    ("target", "read_only", "rule"),
    [
        ("/home/agent/.gitconfig", False, "read-only-extra-mounts"),
        ("/home/agent/.claude/.credentials.json", True, "home-stays-writable"),
        ("/etc/shadow", True, "allowed-mounts-only"),
        ("/run/agentvisor/other", True, "allowed-mounts-only"),
        ("/run", True, "allowed-mounts-only"),
        ("/home", True, "allowed-mounts-only"),
        ("/home/agent", True, "allowed-mounts-only"),
        ("/workspace/x", True, "allowed-mounts-only"),
        ("/", True, "allowed-mounts-only"),
        ("relative/path", True, "plain absolute path"),
    ],
)
def test_credential_mounts_cannot_be_writable_or_cover_fixed_paths(
    settings, repo, worktree, token, tmp_path, target, read_only, rule
):
    secret = tmp_path / "credentials.json"
    secret.write_text("{}")
    with pytest.raises(SandboxError, match=rule):
        spec_for(
            settings,
            repo,
            worktree,
            token,
            credential_mounts=[Mount(secret, Path(target), read_only)],
        )


def test_the_engine_socket_is_never_mounted_itself_or_through_its_folder(
    settings, repo, worktree, token, tmp_path
):
    engine_dir = tmp_path / "engine"
    engine_dir.mkdir()
    engine = engine_dir / "docker.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(engine))
    try:
        for source in (engine, engine_dir):
            with pytest.raises(SandboxError, match="no-docker-socket"):
                spec_for(
                    settings,
                    repo,
                    worktree,
                    token,
                    credential_mounts=[Mount(source, Path("/mnt/engine"), True)],
                    engine_sockets=[str(engine)],
                )
        # A socket that is not a known engine's is refused as well.
        with pytest.raises(SandboxError, match="is a socket"):
            spec_for(
                settings,
                repo,
                worktree,
                token,
                credential_mounts=[Mount(engine, Path("/mnt/engine"), True)],
            )
    finally:
        listener.close()


def test_nothing_else_of_the_state_dir_is_mounted(settings, repo, worktree, token):
    operator = settings.operator_token_path
    operator.write_text("secret")
    for source in (operator, settings.state_dir, settings.tokens_dir):
        with pytest.raises(SandboxError, match="no-state-dir"):
            spec_for(
                settings, repo, worktree, token, credential_mounts=[Mount(source, Path("/x"), True)]
            )


def test_extra_env_cannot_change_identity_and_extra_labels_not_ours(
    settings, repo, worktree, token
):
    for key in ("AGENTVISOR_ROLE", "AGENTVISOR_SOCKET", "HOME", "DOCKER_HOST"):
        with pytest.raises(SandboxError, match="fixed-identity"):
            spec_for(settings, repo, worktree, token, extra_env={key: "x"})
    with pytest.raises(SandboxError, match="agentvisor's own"):
        spec_for(settings, repo, worktree, token, extra_labels={"agentvisor.role": "admin"})
    spec = spec_for(settings, repo, worktree, token, extra_labels={"ci.run": "7"})
    assert spec.labels["ci.run"] == "7"


# --- what a project's own configuration may not do ---------------------------------------------


@pytest.mark.parametrize(
    ("config", "rule"),
    [
        ({"network_mode": "host"}, "own-network-only"),
        ({"network": "bridge"}, "own-network-only"),
        ({"privileged": True}, "no-privileged"),
        ({"cap_add": ["SYS_ADMIN"]}, "no-capabilities"),
        ({"security_opt": ["seccomp=unconfined"]}, "fixed-security-options"),
        ({"volumes": ["/var/run/docker.sock:/var/run/docker.sock"]}, "no-project-mounts"),
        ({"read_only": False}, "read-only-root"),
        ({"user": "0:0"}, "fixed-user"),
        ({"pid_mode": "host"}, "no-host-namespaces"),
        ({"devices": ["/dev/kmsg"]}, "no-devices"),
        ({"mounts": [{"source": "/", "target": "/host"}]}, "no-project-mounts"),
        ({"mounts": [{"source": "data", "target": "/data"}]}, "no-project-mounts"),
        ({"binds": ["data:/data:ro"]}, "no-project-mounts"),
        ({"networks": ["host"]}, "own-network-only"),
        ({"memory_mb": 999999}, "limits-only-lower"),
        ({"pids": 100000}, "limits-only-lower"),
        ({"cpus": 8}, "limits-only-lower"),
        ({"tmpfs_mb": 4096}, "limits-only-lower"),
        ({"env": {"AGENTVISOR_PROJECT": "other"}}, "fixed-identity"),
        ({"env": {"AGENTVISOR_AGENT_COMMAND": "sh"}}, "fixed-identity"),
        ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "no-loader-env"),
        ({"env": {"ld_library_path": "/tmp"}}, "no-loader-env"),
        ({"env": {"ANTHROPIC_BASE_URL": "http://evil"}}, "operator-model-access"),
        ({"env": {"CLAUDE_CONFIG_DIR": "/tmp"}}, "operator-model-access"),
        ({"env": {"http_proxy": "http://evil"}}, "no-traffic-steering"),
        ({"env": {"HTTPS_PROXY": "http://evil"}}, "no-traffic-steering"),
        ({"env": {"GIT_CONFIG_COUNT": "1"}}, "no-git-env"),
        ({"env": {"GIT_SSH_COMMAND": "sh"}}, "no-git-env"),
        ({"env": {"PATH": "/tmp"}}, "fixed-identity"),
        ({"env": {"Path": "/tmp"}}, "no-startup-code-env"),
        ({"env": {"PYTHONSTARTUP": "/tmp/x.py"}}, "no-startup-code-env"),
        ({"env": {"NODE_OPTIONS": "--require /tmp/x.js"}}, "no-startup-code-env"),
        ({"env": {"BASH_ENV": "/tmp/x.sh"}}, "no-startup-code-env"),
        ({"env": {"ENV": "/tmp/x.sh"}}, "no-startup-code-env"),
        ({"env": {"GIT_AUTHOR_NAME": "someone else"}}, "no-git-env"),
        ({"env": {"BAD NAME": "x"}}, "not a valid environment variable name"),
        ({"env": {"COUNT": 3}}, "must be a string"),
        ({"bogus": 1}, "unknown setting"),
    ],
)
def test_project_config_cannot_weaken_the_sandbox(settings, repo, worktree, token, config, rule):
    with pytest.raises(SandboxError, match=rule):
        spec_for(settings, repo, worktree, token, project_config=config)


def test_a_refused_key_names_the_key_the_file_and_the_branch(settings, repo, worktree, token):
    commit(repo, {".agentvisor/sandbox.toml": '[sandbox.env]\nLD_PRELOAD = "/tmp/x.so"\n'})
    with pytest.raises(SandboxError) as refused:
        spec_for(settings, repo, worktree, token)
    assert refused.value.message.startswith(
        f".agentvisor/sandbox.toml on the branch main of {repo} may not set LD_PRELOAD "
        "(rule no-loader-env"
    )
    assert "remove it" in refused.value.message


def test_committed_project_config_may_add_env_and_lower_limits(settings, repo, worktree, token):
    commit(
        repo,
        {
            ".agentvisor/sandbox.toml": "[sandbox]\nmemory_mb = 1024\npids = 200\ncpus = 0.5\n"
            '[sandbox.env]\nNODE_ENV = "test"\n'
        },
    )
    spec = spec_for(settings, repo, worktree, token)

    assert spec.mem_limit_mb == 1024
    assert spec.pids_limit == 200
    assert spec.nano_cpus == 500_000_000
    assert spec.env["NODE_ENV"] == "test"
    assert spec.mounts[-1].target == "/home/agent"  # no mount of the project's own


def test_project_config_is_read_from_the_start_branch_not_the_checkout(
    settings, repo, worktree, token
):
    commit(repo, {".agentvisor/sandbox.toml": "pids = 200\n"})
    # Uncommitted edits in the project's checkout and in the agent's worktree are never read.
    (repo / ".agentvisor" / "sandbox.toml").write_text("pids = 100\n")
    (worktree / ".agentvisor").mkdir(exist_ok=True)
    (worktree / ".agentvisor" / "sandbox.toml").write_text("pids = 50\n")
    assert spec_for(settings, repo, worktree, token).pids_limit == 200
    # Nor is a commit on another branch, e.g. the agent's own.
    subprocess.run(["git", "-C", str(repo), "switch", "-qc", "other"], check=True)
    commit(repo, {".agentvisor/sandbox.toml": "pids = 10\n"})
    assert spec_for(settings, repo, worktree, token, start_branch="main").pids_limit == 200
    assert spec_for(settings, repo, worktree, token, start_branch="other").pids_limit == 10


def test_uncommitted_project_config_file_is_ignored(settings, repo, worktree, token):
    (repo / ".agentvisor").mkdir()
    (repo / ".agentvisor" / "sandbox.toml").write_text("privileged = true\n")
    assert spec_for(settings, repo, worktree, token).pids_limit == settings.pids


def test_project_env_never_overrides_the_operators(settings, repo, worktree, token):
    commit(repo, {".agentvisor/sandbox.toml": '[sandbox.env]\nDISABLE_TELEMETRY = "0"\n'})
    with pytest.raises(SandboxError, match=r"DISABLE_TELEMETRY \(rule operator-values-win"):
        spec_for(settings, repo, worktree, token, extra_env={"DISABLE_TELEMETRY": "1"})
    assert spec_for(settings, repo, worktree, token).env["DISABLE_TELEMETRY"] == "0"


def test_a_broken_project_config_file_is_named(settings, repo, worktree, token):
    commit(repo, {".agentvisor/sandbox.toml": "privileged = true\n"})
    with pytest.raises(SandboxError, match=r"sandbox\.toml on the branch main .* may not set "
                       r"'privileged' \(rule no-privileged"):  # fmt: skip
        spec_for(settings, repo, worktree, token)
    commit(repo, {".agentvisor/sandbox.toml": "pids = \n"})
    with pytest.raises(SandboxError, match=r"sandbox\.toml on the branch main .* not valid TOML"):
        spec_for(settings, repo, worktree, token)


# --- the token file ----------------------------------------------------------------------------


def test_token_file_is_private_and_rewritten_in_place(settings):
    path = write_token_file(settings, PROJECT, ROLE, "ava_first\n")
    inode = path.stat().st_ino

    assert path == token_file_path(settings, PROJECT, ROLE)
    assert path.read_text() == "ava_first\n"
    assert path.stat().st_mode & 0o777 == 0o400
    assert settings.tokens_dir.stat().st_mode & 0o777 == 0o700
    if os.getuid() == 0:
        assert (path.stat().st_uid, path.stat().st_gid) == (1234, 2345)

    # A running sandbox has this inode mounted: a new token must reach it.
    write_token_file(settings, PROJECT, ROLE, "ava_second")
    assert path.stat().st_ino == inode
    assert path.read_text() == "ava_second\n"
    assert path.stat().st_mode & 0o777 == 0o400
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_token_file_never_writes_through_a_symlink(settings, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    path = token_file_path(settings, PROJECT, ROLE)
    path.parent.mkdir(parents=True)
    path.symlink_to(victim)

    write_token_file(settings, PROJECT, ROLE, "ava_token")
    assert victim.read_text() == "keep\n"
    assert not path.is_symlink() and path.read_text() == "ava_token\n"


def test_empty_token_is_refused(settings):
    with pytest.raises(SandboxError, match="empty"):
        write_token_file(settings, PROJECT, ROLE, "  \n")


# --- status, pure ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_seen", "started", "expected"),
    [
        (95.0, None, "healthy"),  # 5 s ago
        (60.0, None, "unhealthy"),  # 40 s ago, timeout 30
        (None, None, "starting"),
        (None, 90.0, "starting"),  # started 10 s ago, no heartbeat yet
        (None, 50.0, "unhealthy"),  # started 50 s ago, still nothing
        (40.0, 85.0, "starting"),  # restarted: the old heartbeat predates the start
        (40.0, 20.0, "unhealthy"),  # heartbeats stopped after the start
    ],
)
def test_health_follows_the_shims_heartbeats(last_seen, started, expected):
    row = {"last_seen_at": last_seen}
    assert health_of(row, now=100.0, timeout_s=30.0, started_at=started) == expected


def test_docker_times_and_stats_are_read_like_docker_does():
    assert parse_docker_time("2024-05-01T12:00:00.123456789Z") == pytest.approx(1714564800.123456)
    assert parse_docker_time("2024-05-01T12:00:00Z") == 1714564800.0
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    sample = {
        "cpu_stats": {
            "cpu_usage": {"total_usage": 3_000_000_000},
            "system_cpu_usage": 20_000_000_000,
            "online_cpus": 4,
        },
        "precpu_stats": {
            "cpu_usage": {"total_usage": 2_000_000_000},
            "system_cpu_usage": 10_000_000_000,
        },
        "memory_stats": {
            "usage": 100 * 2**20,
            "limit": 512 * 2**20,
            "stats": {"total_inactive_file": 20 * 2**20},
        },
    }
    assert cpu_percent(sample) == pytest.approx(40.0)
    assert memory_mb(sample) == pytest.approx(80.0)
    assert cpu_percent({}) is None and memory_mb({}) is None


def test_an_unreachable_engine_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(EngineUnavailable, match=r"Docker engine not reachable at unix://.*"
                       r"no-engine\.sock; run 'make setup' or start dockerd"):  # fmt: skip
        docker_client()


def test_last_lines_drops_the_blank_rows_below_the_cursor_and_keeps_the_last_n():
    captured = "one\ntwo\n\nthree\ndemo> \n\n   \n\n"
    assert last_lines(captured, 2) == "three\ndemo> \n"
    assert last_lines(captured, 0) == "one\ntwo\n\nthree\ndemo> \n"
    assert last_lines(captured, 100) == last_lines(captured, 0)
    assert last_lines("\n\n", 5) == ""
