"""schemathesis over the live server's /openapi.json, as an agent and as the operator: the bar
is 0 answers 5xx and 0 schema violations (undocumented status codes, bodies or content types
that do not match the schema, schema-invalid input accepted). The number of cases is printed.

Each run is bounded by AGENTVISOR_FUZZ_S seconds (30 in `make test`; `make fuzz` runs longer).
schemathesis speaks HTTP over TCP, so the server also listens on a loopback port
(`agentvisor serve --port`), exactly the server the Unix socket serves.

Excluded, and why: `/v1/dashboard/pane/{project}/{role}/stream` streams a pane for as long as
the client stays (server-sent events, not a JSON answer). `/git/` and `/model/` (the git
channel and the model broker's relay) are not in the schema: they are not JSON APIs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentvisor.server.server_control import answers_http
from tests.conftest import REPO, ServerProcess

FUZZ_S = int(os.environ.get("AGENTVISOR_FUZZ_S", "30"))
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "negative_data_rejection",
    ]
)
EXCLUDED = r"/stream$"  # the dashboard's pane stream: see the module docstring


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TcpServer(ServerProcess):
    """The real server, also on a loopback TCP port, started in an empty directory (a
    relative spec path the fuzzer makes up then names nothing)."""

    def __init__(self, state_dir: Path, port: int) -> None:
        super().__init__(state_dir)
        self.port = port

    def start(self) -> TcpServer:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "test-server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentvisor",
                "--state",
                str(self.state_dir),
                "serve",
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=log,
            stderr=log,
            cwd=self.state_dir,
        )
        log.close()
        from tests.helpers import wait_until

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError("server exited: " + self.log_tail())
            # An HTTP answer on both the socket and the port: the port is bound (and accepts
            # connections) before the app serves.
            return answers_http(self.settings, self.port)

        wait_until(up, timeout_s=30, message="the server's TCP port")
        return self


@pytest.fixture
def tcp_server() -> Iterator[TcpServer]:
    tmp = Path(tempfile.mkdtemp(prefix="av-", dir="/tmp"))
    proc = TcpServer(tmp / "state", free_port()).start()
    yield proc
    proc.kill(signal.SIGTERM)
    shutil.rmtree(tmp, ignore_errors=True)


def schemathesis(server: TcpServer, token: str, name: str, *select: str) -> subprocess.Popen[str]:
    """One schemathesis process (one worker: CPython 3.11's AST is not thread-safe, and
    schemathesis's worker threads trip over it) over the operations `select` picks."""
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"http://127.0.0.1:{server.port}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        *select,
        "--max-time",
        str(FUZZ_S),
        "--workers",
        "1",
        "--request-timeout",
        "65",
        "--report-dir",
        str(server.state_dir / f"fuzz-{name}"),
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"},
        cwd=server.state_dir,
    )


def fuzz(server: TcpServer, token: str, who: str) -> int:
    """Fuzz every operation as `who`; the number of cases run. The inbox's long poll (up to
    60 s a case) runs in a process of its own, beside the rest, so it holds nothing up."""
    runs = {
        f"{who}": schemathesis(
            server, token, who, "--exclude-path-regex", f"{EXCLUDED}|^/v1/inbox/lease$"
        ),
        f"{who}-lease": schemathesis(
            server, token, f"{who}-lease", "--include-path", "/v1/inbox/lease"
        ),
    }
    total = 0
    for name, run in runs.items():
        output, _ = run.communicate(timeout=FUZZ_S + 180)
        cases = re.search(r"(\d+) generated", output)
        summary = re.search(r"Test cases:\s*\n\s*(.+)", output)
        print(
            f"\nschemathesis as {name}: {cases.group(1) if cases else '?'} cases in about "
            f"{FUZZ_S} s; {summary.group(1).strip() if summary else 'no summary'}"
        )
        assert cases and int(cases.group(1)) > 0, output[-3000:]
        assert run.returncode == 0, (
            f"schemathesis as {name} found failures:\n{output[-12000:]}\n"
            f"server log:\n{server.log_tail()}"
        )
        total += int(cases.group(1))
    print(f"schemathesis as {who}: {total} cases, 0 answers 5xx, 0 schema violations")
    return total


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_schema_violation(tcp_server: TcpServer):
    token = tcp_server.register_agent("demo", "developer")
    tcp_server.register_agent("demo", "orchestrator")
    tcp_server.client.post(
        "/v1/messages", {"project": "demo", "to": "developer", "body": "something to lease"}
    )
    # The agent first: the operator's run may register the agent again (a new token).
    fuzz(tcp_server, token, "agent")
    fuzz(tcp_server, tcp_server.operator_token, "operator")
    assert "Traceback" not in tcp_server.log_tail(), tcp_server.log_tail()
