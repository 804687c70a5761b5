"""Attacks on the network boundary from inside a real sandbox: each test names one.

A real server (with its egress proxy), a real sandbox of the test image, and upstream sites
this test starts on the host's 127.0.0.1. No traffic goes anywhere but loopback: what must be
refused is refused by the proxy before it connects (IP literals, names that resolve to
loopback, `denied.invalid`, which is never resolved), or never leaves the sandbox (it has no
interface but loopback).
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import re
import shutil
import signal
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest
from docker.models.containers import Container
from typer.testing import CliRunner

from agentvisor.cli import app as cli_app
from agentvisor.config import Settings
from agentvisor.errors import EngineUnavailable
from agentvisor.git.git_run import run_git
from agentvisor.git.worktrees import ensure_worktree
from agentvisor.sandbox.docker_engine import docker_client
from agentvisor.sandbox.sandbox_spec import build_spec, gather_spec_inputs
from agentvisor.sandbox.sandbox_tokens import write_token_file
from agentvisor.sandbox.sandbox_user import sandbox_owner
from agentvisor.sandbox.sandboxes import SandboxBackend
from tests.conftest import ServerProcess, require
from tests.helpers import remove_labelled, sandbox_test_image, wait_until

pytestmark = pytest.mark.docker

TEST_LABEL = "agentvisor-test.run"
ROLE = "developer"

# Runs in the sandbox: one request through the proxy the environment names. NO_PROXY is
# dropped because the test sites are on the host's 127.0.0.1, which a client would otherwise
# take for the sandbox's own loopback and not proxy.
FETCH = """
import json, os, sys, urllib.error, urllib.request
for name in ("NO_PROXY", "no_proxy"):
    os.environ.pop(name, None)
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as answer:
        print(json.dumps({"status": answer.status, "body": answer.read().decode()}))
except urllib.error.HTTPError as error:
    print(json.dumps({"status": error.code, "body": error.read().decode()}))
except Exception as error:
    print(json.dumps({"status": 0, "error": type(error).__name__ + ": " + str(error)}))
"""

# Runs in the sandbox: a CONNECT tunnel by hand, then plain HTTP inside it.
TUNNEL = """
import base64, json, os, socket, sys, urllib.parse
proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
auth = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
s = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
target = sys.argv[1]
s.sendall(f"CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n"
          f"Proxy-Authorization: Basic {auth}\\r\\n\\r\\n".encode())
head = b""
while b"\\r\\n\\r\\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        break
    head += chunk
status = head.split(b"\\r\\n", 1)[0].decode()
inner = ""
if " 200 " in status + " ":
    s.sendall(b"GET /inside HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    inner = data.decode(errors="replace")
print(json.dumps({"status": status, "inner": inner}))
"""

# Runs in the sandbox: what a direct connection sees.
DIRECT = """
import json, os, socket, sys
out = {"interfaces": sorted(os.listdir("/sys/class/net"))}
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    out["direct"] = "open"
except OSError as error:
    out["direct"] = type(error).__name__
try:
    socket.getaddrinfo("denied.invalid", 80)
    out["dns"] = "resolved"
except OSError as error:
    out["dns"] = type(error).__name__
print(json.dumps(out))
"""


class _Site(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"site {self.server.server_address[1]} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Net:
    run: str
    server: ServerProcess
    container: Container
    project: str
    allowed: int  # a site listed exactly as 127.0.0.1:PORT
    unlisted: int  # a site nobody listed
    host_port: int  # a listener on the host's every address (0.0.0.0)
    host_address: str  # the host's own address on Docker's bridge

    def run_py(self, code: str, *args: str) -> dict:
        result = self.container.exec_run(["python3", "-c", code, *args])
        output = (result.output or b"").decode(errors="replace").strip()
        return json.loads(output.splitlines()[-1])

    def fetch(self, url: str) -> dict:
        return self.run_py(FETCH, url)

    def egress(self, *args: str) -> list[dict]:
        state = str(self.server.state_dir)
        result = CliRunner().invoke(cli_app, ["--state", state, "egress", *args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)


def _site(bind: str = "127.0.0.1") -> tuple[http.server.ThreadingHTTPServer, int]:
    httpd = http.server.ThreadingHTTPServer((bind, 0), _Site)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


def _host_address(engine: docker.DockerClient) -> str:
    """The host's end of Docker's default bridge: an address of this machine's own."""
    config = engine.networks.get("bridge").attrs["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    try:
        engine = docker_client()
    except EngineUnavailable as exc:
        require(False, f"the Docker engine ({exc.message})")
    image = sandbox_test_image()
    try:
        engine.images.get(image)
    except docker.errors.ImageNotFound:
        require(False, f"the image {image} (make image-test)")
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="av-", dir="/tmp"))
    server = ServerProcess(tmp / "state", env={"AGENTVISOR_WATCHDOG_INTERVAL_S": "3600"})
    sites = [_site(), _site(), _site("0.0.0.0")]
    try:
        server.start()
        project = f"net{run}"
        repo = tmp / project
        repo.mkdir()
        run_git(repo, "init", "--quiet", "-b", "main")
        (repo / "README.md").write_text("hello\n")
        run_git(repo, "add", "README.md")
        run_git(repo, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-qm", "1")
        server.ensure_project(project, str(repo))
        settings = Settings(state_dir=tmp / "state", image=image, memory_mb=256, pids=128)
        worktree = ensure_worktree(repo, ROLE, "main", owner=sandbox_owner(settings)).path
        token = write_token_file(settings, project, ROLE, server.register_agent(project, ROLE))
        spec = build_spec(
            gather_spec_inputs(
                settings,
                project=project,
                role=ROLE,
                worktree=worktree,
                repo_root=repo,
                token_file=token,
                profile="demo",
                extra_labels={TEST_LABEL: run},
                start_branch="main",
            )
        )
        allowed, unlisted, anywhere = (port for _, port in sites)
        server.client.post(
            "/v1/egress/rules", {"project": project, "entry": f"127.0.0.1:{allowed}"}
        )
        backend = SandboxBackend(settings)
        backend.ensure_running(spec)
        container = engine.containers.get(spec.name)
        rows = lambda: server.client.get("/v1/agents", project=project)  # noqa: E731
        wait_until(lambda: rows()[0]["last_seen_at"], timeout_s=60, message="the first heartbeat")
        yield Net(run, server, container, project, allowed, unlisted, anywhere,
                  _host_address(engine))  # fmt: skip
    finally:
        remove_labelled(engine, TEST_LABEL, run)
        for httpd, _ in sites:
            httpd.shutdown()
        server.kill(signal.SIGTERM)
        shutil.rmtree(tmp, ignore_errors=True)


def test_direct_connection_to_the_hosts_address_fails_for_want_of_an_interface(net: Net):
    # The host listens on every address (so a bridge would reach it); the sandbox has none.
    with socket.create_connection(("127.0.0.1", net.host_port), timeout=5):
        pass
    seen = net.run_py(DIRECT, net.host_address, str(net.host_port))
    assert seen == {"interfaces": ["lo"], "direct": "OSError", "dns": "gaierror"} or (
        seen["interfaces"] == ["lo"] and seen["direct"] != "open" and seen["dns"] == "gaierror"
    )


def test_the_sandboxs_own_loopback_is_reached_directly_not_through_the_proxy(net: Net):
    """What the git channel and a model server inside the sandbox (test_claude_tui) rely on:
    NO_PROXY keeps 127.0.0.1 off the proxy."""
    serve = (
        "import http.server, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.send_header('Content-Length', '6')\n"
        "        self.end_headers(); self.wfile.write(b'inside')\n"
        "http.server.HTTPServer(('127.0.0.1', 8766), H).serve_forever()\n"
    )
    net.container.exec_run(["python3", "-c", serve], detach=True)
    direct = FETCH.replace('for name in ("NO_PROXY", "no_proxy"):', "for name in ():")

    def fetched() -> dict:
        return net.run_py(direct, "http://127.0.0.1:8766/")

    assert wait_until(lambda: fetched()["status"] == 200, timeout_s=10, message="the server")
    assert fetched()["body"] == "inside"


def test_an_allowed_site_answers_through_the_proxy(net: Net):
    answer = net.fetch(f"http://127.0.0.1:{net.allowed}/ok")
    assert answer == {"status": 200, "body": f"site {net.allowed} /ok"}


def test_an_unlisted_site_gets_403_naming_the_host_and_the_command_that_allows_it(net: Net):
    answer = net.fetch(f"http://127.0.0.1:{net.unlisted}/")
    assert answer["status"] == 403
    assert f"127.0.0.1:{net.unlisted}" in answer["body"]
    assert f"agentvisor egress allow {net.project} 127.0.0.1:{net.unlisted}" in answer["body"]


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{allowed}/",  # an IP literal on loopback, not listed
        "http://[::1]:{allowed}/",  # IPv6 loopback
        "http://{host_address}:{host_port}/",  # the host's own address
        "http://localhost:{allowed}/",  # a name that resolves to 127.0.0.1
        "http://denied.invalid/",  # a name nobody listed: never resolved
    ],
)
def test_loopback_the_hosts_address_and_unlisted_names_are_denied(net: Net, target: str):
    url = target.format(allowed=net.allowed, host_address=net.host_address, host_port=net.host_port)
    answer = net.fetch(url)
    assert answer["status"] == 403, answer
    assert "agentvisor egress allow" in answer["body"]


def test_connect_to_an_allowed_plain_port_is_a_tunnel(net: Net):
    seen = net.run_py(TUNNEL, f"127.0.0.1:{net.allowed}")
    assert seen["status"].startswith("HTTP/1.1 200")
    assert seen["inner"].endswith(f"site {net.allowed} /inside")
    refused = net.run_py(TUNNEL, f"127.0.0.1:{net.unlisted}")
    assert refused["status"].startswith("HTTP/1.1 403") and refused["inner"] == ""


def test_a_request_without_the_agents_token_gets_407(net: Net):
    anonymous = "os.environ['HTTP_PROXY'] = os.environ['http_proxy'] = 'http://127.0.0.1:7398'\n"
    answer = net.run_py(FETCH.replace("for name in", anonymous + "for name in"),
                        f"http://127.0.0.1:{net.allowed}/")  # fmt: skip
    assert answer["status"] == 407


def test_every_attempt_shows_in_agentvisor_egress(net: Net):
    def rows() -> list[dict]:
        return net.egress(net.project)

    # 9 of the project's agent; the anonymous one (407) has no project: it shows without one.
    wait_until(lambda: len(rows()) >= 9, timeout_s=10, message="every attempt recorded")
    anonymous = [r for r in net.egress() if r["data"]["reason"] == "no-credentials"]
    assert anonymous and anonymous[0]["data"]["role"] is None
    seen = {(r["data"]["host"], r["data"]["port"], r["data"]["allowed"]) for r in rows()}
    assert ("127.0.0.1", net.allowed, True) in seen
    assert ("127.0.0.1", net.unlisted, False) in seen
    assert ("127.0.0.2", net.allowed, False) in seen
    assert ("::1", net.allowed, False) in seen
    assert (net.host_address, net.host_port, False) in seen
    assert ("localhost", net.allowed, False) in seen
    assert ("denied.invalid", 80, False) in seen
    denied = net.egress(net.project, "--denied")
    assert denied and not any(r["data"]["allowed"] for r in denied)
    assert all(r["data"]["role"] in (ROLE, None) for r in rows())
    connects = [r for r in rows() if r["data"]["method"] == "CONNECT" and r["data"]["allowed"]]
    assert connects and connects[0]["data"]["bytes_down"] > 0
    metrics = net.server.client.get("/metrics")
    # prometheus_client writes label names in sorted order.
    assert re.search(
        r'agentvisor_egress_requests_total\{decision="denied",method="[^"]+",reason="ip-literal"\}',
        metrics,
    )


def test_with_the_proxy_down_nothing_goes_out(net: Net):
    net.server.kill(signal.SIGTERM)  # the proxy lives in the server: both are down now
    assert not (net.server.state_dir / "sock" / "egress.sock").exists()
    for url in (f"http://127.0.0.1:{net.allowed}/", "http://denied.invalid/"):
        answer = net.fetch(url)
        assert answer["status"] == 0, answer  # no answer at all: the relay finds no proxy
    seen = net.run_py(DIRECT, net.host_address, str(net.host_port))
    assert seen["direct"] != "open"
