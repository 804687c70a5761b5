"""The model broker: time to the first byte of a streamed answer from the scripted model server
(HTTPS, a test CA), straight versus the way a sandbox goes (the shim's relay on loopback, the
API socket, the broker, its pooled connection upstream). Everything on this machine; the model
server and the relay run as processes of their own, as they do for real."""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from agentvisor.drills.fleet import process_cpu_s as cpu_s
from agentvisor.testing.tls import make_test_ca
from benchmarks.report import Result

REQUESTS = 100
BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "stream": True,
    "messages": [{"role": "user", "content": "hello"}],
}
KEY = "sk-ant-bench-real-key"
# Like Claude Code's own client (Node sets TCP_NODELAY on every socket).
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
RELAY = (
    "import sys; from agent_shim.channel import Relay; Relay(sys.argv[1], int(sys.argv[2])).serve()"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@contextmanager
def process(*args: str) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def first_byte_ms(client: httpx.Client, path: str, key: str) -> float:
    started = time.perf_counter()
    with client.stream("POST", path, json=BODY, headers={"x-api-key": key}) as answer:
        assert answer.status_code == 200, answer.status_code
        chunks = answer.iter_raw()
        next(chunks)
        elapsed = (time.perf_counter() - started) * 1000
        for _ in chunks:
            pass
    return elapsed


def measure(clients: list[tuple[httpx.Client, str, str]]) -> list[list[float]]:
    """TTFB samples of each (client, path, key), taken in turn, one request each: a load that
    drifts on this shared machine shifts every column alike instead of one of them."""
    for client, path, key in clients:
        for _ in range(10):  # warm: connections opened, code paths loaded
            first_byte_ms(client, path, key)
    samples: list[list[float]] = [[] for _ in clients]
    for _ in range(REQUESTS):
        for column, (client, path, key) in zip(samples, clients, strict=True):
            column.append(first_byte_ms(client, path, key))
    return [sorted(column) for column in samples]


def ttfb() -> tuple[list[float], list[float], list[float], float]:
    from tests.conftest import ServerProcess

    with tempfile.TemporaryDirectory(prefix="av-", dir="/tmp") as folder:
        tmp = Path(folder)
        ca = make_test_ca(tmp / "ca")
        model_port, relay_port = free_port(), free_port()
        model_url = f"https://127.0.0.1:{model_port}"
        model = (
            "-m", "agentvisor.testing.model_server", "--port", str(model_port),
            "--cert", str(ca.server_cert), "--key", str(ca.server_key),
        )  # fmt: skip
        with process(*model):
            wait_port(model_port)
            server = ServerProcess(
                tmp / "state",
                env={
                    "HOME": str(tmp),
                    "ANTHROPIC_API_KEY": KEY,
                    "AGENTVISOR_MODEL_UPSTREAM": model_url,
                    "AGENTVISOR_MODEL_UPSTREAM_CA": str(ca.ca_cert),
                },
            ).start()
            try:
                token = server.register_agent("bench", "developer")
                with process("-c", RELAY, str(server.socket_path), str(relay_port)):
                    wait_port(relay_port)
                    direct = httpx.Client(
                        base_url=model_url,
                        transport=httpx.HTTPTransport(
                            verify=str(ca.ca_cert), socket_options=NODELAY
                        ),
                        timeout=30,
                    )
                    brokered = httpx.Client(
                        base_url=f"http://127.0.0.1:{relay_port}",
                        transport=httpx.HTTPTransport(socket_options=NODELAY),
                        timeout=30,
                    )
                    socket_only = httpx.Client(
                        base_url="http://agentvisor",
                        transport=httpx.HTTPTransport(uds=str(server.socket_path)),
                        timeout=30,
                    )
                    with direct, brokered, socket_only:
                        assert server.proc is not None
                        cpu_before = cpu_s(server.proc.pid)
                        straight, through, no_relay = measure(
                            [
                                (direct, "/v1/messages", KEY),
                                (brokered, "/model/v1/messages", token),
                                (socket_only, "/model/v1/messages", token),
                            ]
                        )
                        brokered_requests = 2 * (REQUESTS + 10)
                        cpu_ms = (cpu_s(server.proc.pid) - cpu_before) * 1000 / brokered_requests
            finally:
                server.kill()
    return straight, through, no_relay, cpu_ms


def run() -> list[Result]:
    straight, through, no_relay, cpu_ms = ttfb()
    direct_ms, broker_ms = statistics.median(straight), statistics.median(through)
    added = broker_ms - direct_ms
    p90 = through[int(len(through) * 0.9) - 1]
    return [
        Result("model TTFB straight to the model server, median", f"{direct_ms:.2f} ms", ""),
        Result(
            "model TTFB through relay + API socket + broker, median",
            f"{broker_ms:.2f} ms (p90 {p90:.2f} ms)",
            "",
        ),
        Result(
            "model TTFB on the API socket without the relay, median",
            f"{statistics.median(no_relay):.2f} ms",
            "",
        ),
        Result("model TTFB added by the broker, median", f"{added:.2f} ms", "< 5 ms", added < 5),
        Result("server CPU per brokered request (whole answer)", f"{cpu_ms:.2f} ms", ""),
    ]
