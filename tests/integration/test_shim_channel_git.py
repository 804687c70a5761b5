"""The shim's channel and publisher with real git: pushes to a `file://` remote, and git's
smart HTTP (`git http-backend` behind a small HTTP server on a Unix socket, standing in for
the host API) through the relay, authenticated as the image's git config and the publisher do.
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import socket
import socketserver
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from agent_shim.__main__ import start_channel
from agent_shim.channel import Relay
from agent_shim.config import ShimConfig
from agent_shim.git_publish import GitBranch, Publisher, PublishSchedule
from tests.helpers import git, wait_until

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok-0123456789abcdef"
ROLE = "dev"


def commit(workdir: Path, message: str, *extra: str) -> str:
    git(workdir, "-c", "user.name=A", "-c", "user.email=a@x", "commit", "-q", *extra,
            "--allow-empty", "-m", message)  # fmt: skip
    return git(workdir, "rev-parse", "HEAD").strip()


def remote_tip(bare: Path, ref: str = f"refs/heads/agent/{ROLE}") -> str | None:
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", ref],
        cwd=bare,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or None


@pytest.fixture
def repos(short_tmp: Path) -> tuple[Path, Path]:
    """A bare 'project' and an agent's clone of it on `agent/dev`."""
    bare = short_tmp / "project.git"
    seed = short_tmp / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    commit(seed, "start")
    git(short_tmp, "clone", "-q", "--bare", str(seed), str(bare))
    workdir = short_tmp / "work"
    git(short_tmp, "clone", "-q", str(bare), str(workdir))
    git(workdir, "checkout", "-q", "-b", f"agent/{ROLE}")
    return bare, workdir


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


# The publisher against a file:// remote.


def test_each_new_commit_reaches_the_remote_within_a_second(repos, stop):
    bare, workdir = repos
    branch = GitBranch(str(workdir), ROLE, remote=bare.as_uri())
    published: list[str] = []
    Publisher(branch, start_delay_s=0, poll_s=0.1, on_published=published.append).start(stop)
    latencies = []
    for n in range(5):
        tip = commit(workdir, f"work {n}")
        started = time.monotonic()
        wait_until(lambda tip=tip: remote_tip(bare) == tip, timeout_s=5.0, interval_s=0.005)
        latencies.append(time.monotonic() - started)
    print(f"\ncommit to remote (file://, poll 0.1 s): max {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < 1.0
    wait_until(lambda: published and published[-1] == tip)


def test_a_rewritten_branch_is_force_pushed(repos, stop):
    bare, workdir = repos
    Publisher(
        GitBranch(str(workdir), ROLE, remote=bare.as_uri()), poll_s=0.1, start_delay_s=0
    ).start(stop)
    first = commit(workdir, "first")
    wait_until(lambda: remote_tip(bare) == first)
    amended = commit(workdir, "first, amended", "--amend")
    wait_until(lambda: remote_tip(bare) == amended)


def test_a_refused_push_is_logged_once_and_goes_through_once_allowed(repos, stop, caplog):
    caplog.set_level(logging.INFO, "agent_shim")
    bare, workdir = repos
    first = commit(workdir, "first")
    schedule = PublishSchedule(rejected_retry_s=0.1)
    publisher = Publisher(
        GitBranch(str(workdir), ROLE, remote=bare.as_uri()), schedule=schedule, poll_s=0.05
    )
    publisher.step()
    assert remote_tip(bare) == first
    git(bare, "config", "receive.denyNonFastForwards", "true")
    amended = commit(workdir, "rewritten", "--amend")
    wait_until(lambda: (publisher.step(), schedule.failures >= 3)[1])
    assert remote_tip(bare) == first
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "non-fast-forward" in refused[0]
    git(bare, "config", "receive.denyNonFastForwards", "false")
    wait_until(lambda: (publisher.step(), remote_tip(bare) == amended)[1])
    assert "pushing agent/dev works again" in caplog.text


def test_a_hook_and_a_hostile_environment_do_not_change_what_is_pushed(repos, stop, tmp_path):
    bare, workdir = repos
    marker = tmp_path / "hook-ran"
    hook = workdir / ".git" / "hooks" / "pre-push"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    hook.chmod(0o755)
    env = {**os.environ, "GIT_DIR": str(tmp_path / "nowhere"), "GIT_WORK_TREE": "/"}
    branch = GitBranch(str(workdir), ROLE, remote=bare.as_uri(), env=env)
    tip = commit(workdir, "work")
    Publisher(branch, poll_s=0.05, start_delay_s=0).start(stop)
    wait_until(lambda: remote_tip(bare) == tip)
    assert not marker.exists()


def test_the_token_is_never_on_a_command_line(repos, tmp_path):
    bare, workdir = repos
    argv_log = tmp_path / "argv"
    wrapper = tmp_path / "git"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >>{argv_log}\nexec git "$@"\n')
    wrapper.chmod(0o755)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    branch = GitBranch(
        str(workdir),
        ROLE,
        remote=bare.as_uri(),
        channel_url="http://127.0.0.1:7399/",
        token_file=str(token_file),
        git=str(wrapper),
    )
    commit(workdir, "work")
    Publisher(branch).step()
    assert "push" in argv_log.read_text()
    assert TOKEN not in argv_log.read_text()


# Git over HTTP through the relay.


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class GitBackend(BaseHTTPRequestHandler):
    """`git http-backend` as CGI for GIT_PROJECT_ROOT; requires the token, as Bearer or as
    the password of HTTP Basic, and records how each request authenticated."""

    protocol_version = "HTTP/1.1"
    root = ""
    seen: list[str] = []

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _auth(self) -> str | None:
        header = self.headers.get("Authorization", "")
        if header == f"Bearer {TOKEN}":
            return "bearer"
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if password == TOKEN:
                return f"basic {user}"
        return None

    def _serve(self) -> None:
        auth = self._auth()
        self.seen.append(f"{self.command} {self.path.split('?')[0]} {auth}")
        if auth is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="agentvisor"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path.removeprefix("/git"),
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "agent",
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.receivepack",
            "GIT_CONFIG_VALUE_0": "true",
        }
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def channel(short_tmp: Path, repos) -> Iterator[tuple[Relay, type[GitBackend]]]:
    bare, _ = repos
    handler = type("Backend", (GitBackend,), {"root": str(bare.parent), "seen": []})
    server = UnixHTTPServer(str(short_tmp / "api.sock"), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    relay = Relay(str(short_tmp / "api.sock"), port=0)
    relay.start()
    assert relay.wait_bound(5.0)
    yield relay, handler
    relay.stop()
    server.shutdown()
    server.server_close()


def agent_git_env(tmp_path: Path, port: int) -> dict[str, str]:
    """The agent's git inside the sandbox: the image's /etc/gitconfig (its channel port
    replaced by the test's), the token in its file, no other config."""
    system = tmp_path / "gitconfig"
    text = (REPO / "supervisor" / "agentvisor" / "images" / "sandbox" / "gitconfig").read_text()
    system.write_text(text.replace("127.0.0.1:7399", f"127.0.0.1:{port}"))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "GIT_CONFIG_SYSTEM": str(system),
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "AGENTVISOR_TOKEN_FILE": str(token_file),
    }


def test_the_agents_git_fetches_and_pushes_over_the_channel_with_its_token(
    repos, channel, tmp_path
):
    bare, workdir = repos
    relay, backend = channel
    env = agent_git_env(tmp_path, relay.port)
    url = f"http://127.0.0.1:{relay.port}/git/{bare.name}"
    git(workdir, "remote", "set-url", "origin", url)
    git(workdir, "fetch", "-q", "origin", env=env)
    tip = commit(workdir, "over http")
    git(workdir, "push", "-q", "origin", env=env)  # push.default=current
    assert remote_tip(bare) == tip
    assert "POST /git/project.git/git-receive-pack basic agent" in backend.seen
    # Without the image's helper the channel refuses.
    bare_env = {**env, "GIT_CONFIG_SYSTEM": "/dev/null"}
    done = subprocess.run(
        ["git", "fetch", "-q", "origin"], cwd=workdir, env=bare_env, capture_output=True
    )
    assert done.returncode != 0


def test_the_publisher_pushes_over_the_channel_with_a_bearer_header(repos, channel, tmp_path, stop):
    bare, workdir = repos
    relay, backend = channel
    url = f"http://127.0.0.1:{relay.port}/git/{bare.name}"
    git(workdir, "remote", "set-url", "origin", url)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # no helper: only the header
    branch = GitBranch(
        str(workdir),
        ROLE,
        channel_url=f"http://127.0.0.1:{relay.port}/",
        token_file=str(token_file),
        env=env,
    )
    published: list[str] = []
    Publisher(branch, on_published=published.append, start_delay_s=0).start(stop)  # default poll
    latencies = []
    for n in range(10):
        tip = commit(workdir, f"work {n}")
        started = time.monotonic()
        wait_until(lambda tip=tip: remote_tip(bare) == tip, timeout_s=5.0, interval_s=0.005)
        latencies.append(time.monotonic() - started)
        wait_until(lambda tip=tip: published[-1:] == [tip])  # its push has ended too
    print(
        f"\ncommit to remote over the channel: "
        f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    assert max(latencies) < 1.0
    assert all(line.endswith("bearer") for line in backend.seen), backend.seen


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_shim_starts_the_channel_and_publishes_the_agents_branch(
    repos, short_tmp, tmp_path, stop, monkeypatch
):
    bare, workdir = repos
    handler = type("Backend", (GitBackend,), {"root": str(bare.parent), "seen": []})
    server = UnixHTTPServer(str(short_tmp / "shim-api.sock"), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    git(workdir, "remote", "set-url", "origin", f"http://127.0.0.1:{port}/git/{bare.name}")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    config = ShimConfig.from_env(
        {
            "HOME": str(tmp_path),
            "AGENTVISOR_PROFILE": "demo",
            "AGENTVISOR_SOCKET": str(short_tmp / "shim-api.sock"),
            "AGENTVISOR_TOKEN_FILE": str(token_file),
            "AGENTVISOR_WORKDIR": str(workdir),
            "AGENTVISOR_CHANNEL_PORT": str(port),
            "AGENTVISOR_ROLE": ROLE,
        }
    )
    relay = start_channel(config, logging.getLogger("agent_shim"), stop)
    try:
        assert relay is not None
        tip = commit(workdir, "published by the shim")
        wait_until(lambda: remote_tip(bare) == tip, timeout_s=10.0)
        assert handler.seen and all(line.endswith("bearer") for line in handler.seen)
    finally:
        stop.set()
        if relay is not None:
            relay.stop()
        server.shutdown()
        server.server_close()


def test_the_shim_has_no_channel_when_told_so_or_without_a_repository(tmp_path, stop):
    log = logging.getLogger("agent_shim")
    off = ShimConfig.from_env({"HOME": str(tmp_path), "AGENTVISOR_CHANNEL_PORT": "0"})
    assert start_channel(off, log, stop) is None
    no_repo = ShimConfig.from_env({"HOME": str(tmp_path), "AGENTVISOR_WORKDIR": str(tmp_path)})
    assert start_channel(no_repo, log, stop) is None


# What the relay costs.


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b"x" * int(self.path.strip("/") or 0)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:  # writing b"" to a client that has read the headers and gone: EPIPE
            self.wfile.write(body)


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def test_the_relay_adds_little_to_a_request(short_tmp):
    path = str(short_tmp / "hello.sock")
    server = UnixHTTPServer(path, Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    relay = Relay(path, port=0)
    relay.start()
    assert relay.wait_bound(5.0)

    def timed(make: type | object, count: int, size: int = 0) -> list[float]:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            conn = make()  # type: ignore[operator]
            conn.request("GET", f"/{size}")
            assert len(conn.getresponse().read()) == size
            conn.close()
            times.append(time.perf_counter() - started)
        return times

    try:
        direct = timed(lambda: UnixConnection(path), 200)
        relayed = timed(lambda: http.client.HTTPConnection("127.0.0.1", relay.port), 200)
        size = 32 * 1024 * 1024
        big_direct = min(timed(lambda: UnixConnection(path), 3, size))
        big_relayed = min(
            timed(lambda: http.client.HTTPConnection("127.0.0.1", relay.port), 3, size)
        )
    finally:
        relay.stop()
        server.shutdown()
        server.server_close()
    overhead_ms = (statistics.median(relayed) - statistics.median(direct)) * 1000
    print(
        f"\nrequest on a new connection: direct {statistics.median(direct) * 1000:.2f} ms, "
        f"relayed {statistics.median(relayed) * 1000:.2f} ms (median; +{overhead_ms:.2f} ms)\n"
        f"32 MiB response: direct {size / big_direct / 2**20:.0f} MiB/s, "
        f"relayed {size / big_relayed / 2**20:.0f} MiB/s"
    )
    assert overhead_ms < 20.0  # a loose bound: a loop that waited on a timer would be far off
    assert size / big_relayed > 20 * 2**20
