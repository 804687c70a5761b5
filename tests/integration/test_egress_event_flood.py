"""A flood of requests through the egress proxy cannot fill the database: a real server writes
at most `egress_events_per_minute` `egress.request` events per agent and minute, then one
summary event for the rest, while its counters count every request."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

from tests.conftest import ServerProcess
from tests.helpers import wait_until

LIMIT = 5
FLOOD = 40


def ask(server: ServerProcess, token: str, host: str) -> bytes:
    """One plain-HTTP request on the proxy's socket, as the shim's relay passes it on."""
    auth = base64.b64encode(f"agent:{token}".encode()).decode()
    request = (
        f"GET http://{host}/x HTTP/1.1\r\nHost: {host}\r\n"
        f"Proxy-Authorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(server.settings.egress_socket_path))
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_flood_of_egress_requests_writes_a_minutes_limit_of_events_and_one_summary(
    short_tmp: Path,
):
    offset = short_tmp / "clock-offset"
    offset.write_text("0")
    server = ServerProcess(
        short_tmp / "state",
        env={
            "AGENTVISOR_EGRESS_EVENTS_PER_MINUTE": str(LIMIT),
            "AGENTVISOR_CLOCK_OFFSET_FILE": str(offset),
        },
    ).start()
    try:
        token = server.register_agent("demo", "developer")
        for number in range(FLOOD):
            assert b" 403 " in ask(server, token, f"flood-{number % 3}.example:80")

        def requests(**params: object) -> list[dict]:
            return server.client.get("/v1/egress/requests", project="demo", **params)

        wait_until(lambda: len(requests()) == LIMIT, timeout_s=10)
        metrics = server.client.get("/metrics")
        assert f"{FLOOD}" in next(
            line
            for line in metrics.splitlines()
            if line.startswith("agentvisor_egress_requests_total{") and 'decision="denied"' in line
        )

        # The minute is over: the next request brings the summary of the rest.
        offset.write_text("61")
        assert b" 403 " in ask(server, token, "after.example:80")
        wait_until(lambda: len(requests()) == LIMIT + 2, timeout_s=10)
        rows = requests()
        (summary,) = [r for r in rows if r["data"].get("reason") == "events-suppressed"]
        data = summary["data"]
        assert data["suppressed"] == FLOOD - LIMIT and data["denied"] == FLOOD - LIMIT
        assert data["role"] == "developer" and data["allowed"] is False
        assert sum(data["hosts"].values()) == FLOOD - LIMIT
        assert "more requests" in data["host"] and "flood-" in data["host"]
        assert summary["id"] in {r["id"] for r in requests(denied=True)}
        assert rows[0]["data"]["host"] == "after.example"  # written after the summary
    finally:
        server.kill()
