"""The host API's limits on a real server (docs/limits.md): per-agent quotas answer 429 with
Retry-After and lose nothing already accepted, the agent goes on after the window (the
server's clock is moved with its test-only offset file); bodies are bounded while they
stream; idle connections are closed; a sandbox at its connection limit waits on its own socket
while other sandboxes' sockets and the operator's keep answering."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentvisor.sandbox.sandbox_sockets import sandbox_socket_dir
from tests.conftest import REPO, ServerProcess


@pytest.fixture
def limited(short_tmp: Path) -> Iterator[tuple[ServerProcess, Path]]:
    offset = short_tmp / "clock-offset"
    offset.write_text("0")
    server = ServerProcess(
        short_tmp / "state",
        env={
            "AGENTVISOR_CLOCK_OFFSET_FILE": str(offset),
            "AGENTVISOR_AGENT_MESSAGES_PER_MINUTE": "5",
            "AGENTVISOR_AGENT_EVENTS_PER_MINUTE": "4",
            "AGENTVISOR_AGENT_PENDING_CHECKINS_MAX": "3",
            "AGENTVISOR_PROJECT_STORED_MB_MAX": "1",
            "AGENTVISOR_API_MAX_CONNECTIONS_PER_SANDBOX": "20",
            "AGENTVISOR_API_HEADER_TIMEOUT_S": "3",
        },
    ).start()
    yield server, offset
    server.kill()


def _agent_http(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(server.socket_path)),
        base_url="http://agentvisor",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def _refused(response: httpx.Response, setting: str) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    detail = response.json()["detail"]
    assert setting in detail and "retry" in detail


def test_an_agent_over_its_messages_per_minute_gets_429_loses_nothing_and_goes_on_later(
    limited: tuple[ServerProcess, Path],
):
    server, offset = limited
    server.register_agent("demo", "orchestrator")
    dev = _agent_http(server, server.register_agent("demo", "developer"))
    sent = [
        dev.post("/v1/messages", json={"to": "orchestrator", "body": f"m{i}"}) for i in range(5)
    ]
    assert [r.status_code for r in sent] == [201] * 5
    over = dev.post("/v1/messages", json={"to": "orchestrator", "body": "one too many"})
    _refused(over, "agent_messages_per_minute")
    assert 1 <= int(over.headers["retry-after"]) <= 60
    bodies = [m["body"] for m in server.client.get("/v1/messages", recipient="orchestrator")]
    assert sorted(bodies) == [f"m{i}" for i in range(5)]  # every accepted one is there
    for i in range(8):  # the operator is not counted
        server.client.post("/v1/messages", {"to": "developer", "body": f"op{i}"})

    offset.write_text("61")  # the window has passed
    again = dev.post("/v1/messages", json={"to": "orchestrator", "body": "after the window"})
    assert again.status_code == 201, again.text


def test_an_agent_over_its_events_per_minute_gets_429(limited: tuple[ServerProcess, Path]):
    server, offset = limited
    dev = _agent_http(server, server.register_agent("demo", "developer"))
    codes = [
        dev.post("/v1/events", json={"kind": "note", "data": {"i": i}}).status_code
        for i in range(4)
    ]
    assert codes == [201] * 4
    _refused(dev.post("/v1/events", json={"kind": "note"}), "agent_events_per_minute")
    offset.write_text("61")
    assert dev.post("/v1/events", json={"kind": "note"}).status_code == 201


def test_an_agent_with_too_many_pending_check_ins_gets_429_until_one_goes(
    limited: tuple[ServerProcess, Path],
):
    server, _ = limited
    dev = _agent_http(server, server.register_agent("demo", "developer"))
    made = [dev.post("/v1/checkins", json={"note": f"c{i}", "minutes": 30}) for i in range(3)]
    assert [r.status_code for r in made] == [201] * 3
    _refused(
        dev.post("/v1/checkins", json={"note": "c3", "minutes": 30}), "agent_pending_checkins_max"
    )
    assert len(server.client.get("/v1/checkins")) == 3
    server.client.delete(f"/v1/checkins/{made[0].json()['id']}")
    assert dev.post("/v1/checkins", json={"note": "c3", "minutes": 30}).status_code == 201


def test_a_project_over_its_stored_bytes_gets_429_naming_the_setting(
    limited: tuple[ServerProcess, Path],
):
    server, offset = limited
    server.register_agent("demo", "orchestrator")
    dev = _agent_http(server, server.register_agent("demo", "developer"))
    body = "x" * 200_000
    codes = []
    for i in range(7):
        offset.write_text(str(61 * (i + 1)))  # past the per-minute window each time
        codes.append(dev.post("/v1/messages", json={"to": "orchestrator", "body": body}))
    assert [r.status_code for r in codes[:5]] == [201] * 5
    _refused(codes[5], "project_stored_mb_max")
    assert len(server.client.get("/v1/messages", recipient="orchestrator")) == 5


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_a_chunked_body_past_the_limit_is_refused_while_it_streams(
    limited: tuple[ServerProcess, Path],
):
    server, _ = limited
    token = server.register_agent("demo", "developer")
    assert server.proc is not None
    rss_before = _rss_kb(server.proc.pid)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(server.socket_path))
    sock.sendall(
        b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + token.encode() + b"\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
    sent = 0
    sock.settimeout(0.001)
    answer = b""
    try:
        while sent < 300 * 1024 * 1024:
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except TimeoutError:
                pass
            try:
                answer += sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            if answer:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.settimeout(5)
    while b"\r\n\r\n" not in answer:
        more = sock.recv(65536)
        if not more:
            break
        answer += more
    sock.close()
    rss_after = _rss_kb(server.proc.pid)
    print(
        f"chunked body: sent {sent / 1e6:.1f} MB before the answer; "
        f"server RSS {rss_before / 1024:.0f} MiB -> {rss_after / 1024:.0f} MiB"
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 20 * 1024 * 1024
    assert rss_after - rss_before < 50 * 1024


def test_a_connection_that_sends_no_request_is_closed(limited: tuple[ServerProcess, Path]):
    server, _ = limited
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(server.socket_path))
    sock.settimeout(10)
    started = time.monotonic()
    assert sock.recv(1024) == b""  # closed by the server, nothing sent
    assert 2 < time.monotonic() - started < 8
    sock.close()


def _sandbox_socket(server: ServerProcess, project: str, role: str) -> str:
    return str(sandbox_socket_dir(server.settings, project, role) / "api.sock")


def _get(path: str, token: str, sock: socket.socket | None = None) -> bytes:
    """One GET /v1/whoami on `sock` (or a new connection to `path`): the answer's head."""
    if sock is None:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)
    sock.settimeout(10)
    sock.sendall(
        b"GET /v1/whoami HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
        + token.encode()
        + b"\r\n\r\n"
    )
    answer = sock.recv(65536)
    sock.close()
    return answer


def test_a_sandbox_at_its_connection_limit_waits_alone_while_others_are_served(
    limited: tuple[ServerProcess, Path],
):
    server, _ = limited
    server.ensure_project("demo", "")
    attacker = server.register_agent("demo", "attacker")
    other = server.register_agent("other", "agent")
    attacker_socket = _sandbox_socket(server, "demo", "attacker")
    held = []
    for _ in range(20):  # the limit: api_max_connections_per_sandbox=20
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(attacker_socket)
        held.append(sock)
    waiting = socket.socket(socket.AF_UNIX)
    waiting.setblocking(False)
    try:
        waiting.connect(attacker_socket)  # queued by the kernel, not accepted by the server
        waiting.setblocking(True)
        waiting.settimeout(0.5)
        waiting.sendall(
            b"GET /v1/whoami HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
            + attacker.encode()
            + b"\r\n\r\n"
        )
        with pytest.raises(TimeoutError):
            waiting.recv(1024)  # no answer while the sandbox holds its 20
        # another sandbox's socket and the operator's are served meanwhile
        assert _get(_sandbox_socket(server, "other", "agent"), other).startswith(b"HTTP/1.1 200")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("AGENTVISOR_STATE", None)
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "agentvisor",
                "--state",
                str(server.state_dir),
                "status",
                "demo",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert status.returncode == 0, status.stderr
        held.pop().close()  # one goes: the waiting one is accepted and answered
        waiting.settimeout(10)
        assert waiting.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        waiting.close()
        for sock in held:
            sock.close()


def test_another_sandboxs_socket_is_not_in_a_sandboxs_reach(limited: tuple[ServerProcess, Path]):
    server, _ = limited
    server.register_agent("demo", "attacker")
    server.register_agent("other", "agent")
    mine = sandbox_socket_dir(server.settings, "demo", "attacker")
    theirs = sandbox_socket_dir(server.settings, "other", "agent")
    assert mine != theirs and mine.parent == theirs.parent
    # what a sandbox mounts: its own folder, and the shared one without the host's API socket
    assert sorted(p.name for p in mine.iterdir()) == ["api.sock", "egress.sock"]
    assert os.readlink(mine / "egress.sock") == "/run/agentvisor/sock/egress.sock"
    assert not (server.settings.socket_dir / "api.sock").exists()
    assert server.settings.socket_path.parent == server.state_dir
