"""The agents' git channel on a real server: git's smart HTTP protocol against a real project
repository, with the agent's token. Agents fetch the start branch and the agents' branches and
push only their own; every update is an event, every refusal names its rule."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.helpers import git, make_repo

pytestmark = [pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Channel:
    def __init__(self, server: ServerProcess, port: int, repo: Path, tmp: Path) -> None:
        self.server, self.port, self.repo, self.tmp = server, port, repo, tmp
        self.url = f"http://127.0.0.1:{port}/git/project.git"

    def agent(self, role: str) -> str:
        return self.server.client.post(
            "/v1/agents", {"project": "proj", "role": role, "profile": "demo"}
        )["token"]

    def clone(self, role: str, token: str) -> Path:
        target = self.tmp / f"clone-{role}"
        run(self.tmp, token, "clone", "--quiet", self.url, str(target))
        git(target, "config", "user.name", role)
        git(target, "config", "user.email", f"{role}@example.com")
        return target

    def events(self, kind: str) -> list[dict]:
        return [
            e for e in self.server.client.get("/v1/events", project="proj") if e["kind"] == kind
        ]


def run(
    cwd: Path, token: str | None, *args: str, check: bool = True
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG")}
    env["GIT_TERMINAL_PROMPT"] = "0"
    if token is not None:
        env.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Bearer {token}",
        )
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done


def _channel(short_tmp: Path, extra_env: dict[str, str] | None = None) -> Iterator[Channel]:
    repo = make_repo(short_tmp / "proj", "# spec\n")
    git(repo, "branch", "agent/dev")
    git(repo, "branch", "agent/qa")
    git(repo, "branch", "operator-private")
    git(repo, "tag", "v1")
    port = _free_port()
    server = ServerProcess(
        short_tmp / "state", env={"AGENTVISOR_TCP_PORT": str(port), **(extra_env or {})}
    ).start()
    server.client.post("/v1/projects", {"name": "proj", "path": str(repo), "start_branch": "main"})
    try:
        yield Channel(server, port, repo, short_tmp)
    finally:
        server.kill()


@pytest.fixture
def channel(short_tmp: Path) -> Iterator[Channel]:
    yield from _channel(short_tmp)


def refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(objectname) %(refname)")


def test_an_agent_sees_the_start_branch_and_the_agents_branches_only(channel: Channel) -> None:
    token = channel.agent("dev")

    listed = run(channel.tmp, token, "ls-remote", channel.url).stdout

    names = sorted(line.split("\t")[1] for line in listed.splitlines())
    assert names == ["refs/heads/agent/dev", "refs/heads/agent/qa", "refs/heads/main"]


def test_an_agents_push_of_its_own_branch_lands_and_is_recorded(channel: Channel) -> None:
    token = channel.agent("dev")
    clone = channel.clone("dev", token)
    run(clone, token, "switch", "--quiet", "agent/dev")
    before = git(channel.repo, "rev-parse", "agent/dev").strip()
    (clone / "work.txt").write_text("work\n")
    git(clone, "add", "work.txt")
    git(clone, "commit", "-qm", "dev work")

    run(clone, token, "push", "--quiet", "origin", "agent/dev")

    after = git(channel.repo, "rev-parse", "agent/dev").strip()
    assert after == git(clone, "rev-parse", "HEAD").strip() != before
    [event] = channel.events("git.branch_updated")
    assert event["data"] == {
        "role": "dev",
        "ref": "refs/heads/agent/dev",
        "old": before,
        "new": after,
        "forced": False,
    }
    metrics = channel.server.client.get("/metrics")
    assert 'agentvisor_git_branch_updates_total{forced="false"} 1' in metrics


@pytest.mark.parametrize(
    "refspec",
    [
        "HEAD:refs/heads/main",
        "HEAD:refs/heads/agent/qa",
        "HEAD:refs/tags/v1",
        "HEAD:refs/tags/v2",
        "HEAD:refs/heads/new-branch",
        ":refs/heads/agent/dev",
        "HEAD:refs/notes/commits",
    ],
)
def test_an_agent_cannot_update_any_ref_but_its_own_branch(channel: Channel, refspec: str) -> None:
    token = channel.agent("dev")
    clone = channel.clone("dev", token)
    (clone / "forged.txt").write_text("forged\n")
    git(clone, "add", "forged.txt")
    git(clone, "commit", "-qm", "forged")
    before = refs(channel.repo)

    done = run(clone, token, "push", "--force", "origin", refspec, check=False)

    assert done.returncode != 0
    assert "rule own-branch-only" in done.stderr or "rule no-branch-deletion" in done.stderr
    assert "[remote rejected]" in done.stderr
    assert refs(channel.repo) == before
    assert channel.events("git.push_refused")


def test_a_push_with_the_own_branch_and_another_ref_is_refused_whole(channel: Channel) -> None:
    token = channel.agent("dev")
    clone = channel.clone("dev", token)
    before = refs(channel.repo)

    done = run(
        clone, token, "push", "origin", "HEAD:refs/heads/agent/dev", "HEAD:refs/heads/main",
        check=False,
    )  # fmt: skip

    assert done.returncode != 0 and refs(channel.repo) == before


def test_force_pushes_of_the_own_branch_are_allowed_and_recorded_by_default(
    channel: Channel,
) -> None:
    token = channel.agent("dev")
    git(channel.repo, "switch", "--quiet", "agent/dev")
    (channel.repo / "a.txt").write_text("a\n")
    git(channel.repo, "add", "a.txt")
    git(channel.repo, "commit", "-qm", "published")
    git(channel.repo, "switch", "--quiet", "main")
    clone = channel.clone("dev", token)
    run(clone, token, "switch", "--quiet", "agent/dev")
    git(clone, "reset", "--quiet", "--hard", "HEAD~1")
    (clone / "b.txt").write_text("b\n")
    git(clone, "add", "b.txt")
    git(clone, "commit", "-qm", "rewritten")

    run(clone, token, "push", "--quiet", "--force", "origin", "agent/dev")

    assert git(channel.repo, "log", "-1", "--format=%s", "agent/dev").strip() == "rewritten"
    assert channel.events("git.branch_updated")[0]["data"]["forced"] is True


def test_force_pushes_are_refused_naming_the_rule_when_the_operator_forbids_them(
    short_tmp: Path,
) -> None:
    for channel in _channel(short_tmp, {"AGENTVISOR_ALLOW_FORCE_PUSH": "false"}):
        token = channel.agent("dev")
        clone = channel.clone("dev", token)
        run(clone, token, "switch", "--quiet", "agent/dev")
        (clone / "a.txt").write_text("a\n")
        git(clone, "add", "a.txt")
        git(clone, "commit", "-qm", "first")
        run(clone, token, "push", "--quiet", "origin", "agent/dev")
        published = git(channel.repo, "rev-parse", "agent/dev")
        git(clone, "commit", "--quiet", "--amend", "-m", "rewritten")

        done = run(clone, token, "push", "--force", "origin", "agent/dev", check=False)

        assert done.returncode != 0
        assert "rule fast-forward-only" in done.stderr
        assert git(channel.repo, "rev-parse", "agent/dev") == published
        # A fast-forward still goes through.
        (clone / "b.txt").write_text("b\n")
        git(clone, "reset", "--quiet", "--hard", published.strip())
        git(clone, "add", "b.txt")
        git(clone, "commit", "-qm", "more")
        run(clone, token, "push", "--quiet", "origin", "agent/dev")


def test_the_channel_wants_an_agents_token(channel: Channel) -> None:
    base = f"http://127.0.0.1:{channel.port}/git/project.git/info/refs?service=git-upload-pack"
    operator = channel.server.operator_token

    assert httpx.get(base).status_code == 401
    assert httpx.get(base).headers["www-authenticate"].startswith("Basic")
    assert httpx.get(base, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(base, headers={"Authorization": f"Bearer {operator}"}).status_code == 403
    token = channel.agent("dev")
    assert httpx.get(base, auth=("agent", token)).status_code == 200  # the credential helper's way
    for path in ("HEAD", "objects/info/packs", "config", "info/refs"):
        url = f"http://127.0.0.1:{channel.port}/git/project.git/{path}"
        assert httpx.get(url, auth=("agent", token)).status_code in (400, 404)


def test_a_push_over_the_size_limit_is_refused(short_tmp: Path) -> None:
    for channel in _channel(short_tmp, {"AGENTVISOR_MAX_PUSH_MB": "1"}):
        token = channel.agent("dev")
        clone = channel.clone("dev", token)
        run(clone, token, "switch", "--quiet", "agent/dev")
        (clone / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
        git(clone, "add", "big.bin")
        git(clone, "commit", "-qm", "big")
        before = refs(channel.repo)

        done = run(clone, token, "push", "origin", "agent/dev", check=False)

        assert done.returncode != 0
        assert refs(channel.repo) == before
