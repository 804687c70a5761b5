"""kill -9 the server while it fires check-ins and hands out leases: nothing accepted is lost,
nothing is delivered twice."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

from agentvisor.client import ApiClient
from agentvisor.errors import AgentvisorError, ServerUnavailable
from tests.conftest import ServerProcess
from tests.helpers import wait_until

MESSAGES = 150
CHECKINS = 30


def _retrying(call, stop: threading.Event):
    while not stop.is_set():
        try:
            return call()
        except (ServerUnavailable, AgentvisorError) as exc:
            if "does not answer" not in str(exc) and not isinstance(exc, ServerUnavailable):
                raise
            time.sleep(0.05)
    return None


def test_kill_9_while_firing_and_leasing_loses_and_doubles_nothing(short_tmp: Path):
    server = ServerProcess(short_tmp / "state", env={"AGENTVISOR_LEASE_S": "1.5"}).start()
    token = server.register_agent("demo", "developer")
    stop = threading.Event()
    pane: list[str] = []  # what a shim would have typed, marker by marker

    def consume() -> None:
        client = ApiClient(server.settings, token=token, timeout_s=10)
        while not stop.is_set():
            try:
                lease = client.post("/v1/inbox/lease", wait_s=1)
                if lease is None:
                    continue
                marker = lease["message"]["marker"]
                if marker not in pane:  # the shim's check of the pane history
                    pane.append(marker)
                client.post(
                    f"/v1/inbox/{lease['message']['id']}/ack", {"lease_id": lease["lease_id"]}
                )
            except AgentvisorError:
                time.sleep(0.05)  # server down, or our lease expired while it was down
        client.close()

    accepted: set[int] = set()

    def produce() -> None:
        client = ApiClient(server.settings, timeout_s=10)
        now = time.time()
        for i in range(MESSAGES):
            sent = _retrying(
                lambda i=i: client.post(
                    "/v1/messages", {"to": "developer", "body": f"m{i}", "idempotency_key": f"m{i}"}
                ),
                stop,
            )
            accepted.add(sent["id"])
            if i % 5 == 0 and i // 5 < CHECKINS:
                _retrying(
                    lambda i=i: client.post(
                        "/v1/checkins",
                        {
                            "to": "developer",
                            "note": f"c{i}",
                            "due_at": now + 0.5 + i * 0.02,
                            "idempotency_key": f"c{i}",
                        },
                    ),
                    stop,
                )
            time.sleep(random.uniform(0, 0.01))
        client.close()

    consumer = threading.Thread(target=consume)
    producer = threading.Thread(target=produce)
    consumer.start()
    producer.start()
    try:
        for _ in range(3):
            time.sleep(random.uniform(0.3, 0.8))
            server.kill(signal.SIGKILL)
            server.start()
        producer.join(60)
        assert not producer.is_alive()
        total = MESSAGES + CHECKINS

        def all_delivered() -> bool:
            rows = server.client.get("/v1/messages", limit=500)
            return len(rows) == total and all(r["state"] == "delivered" for r in rows)

        wait_until(all_delivered, timeout_s=60, message="every message to be delivered")
    finally:
        stop.set()
        consumer.join(15)
        server.kill(signal.SIGTERM)
    again = ServerProcess(short_tmp / "state").start()
    try:
        rows = again.client.get("/v1/messages", limit=500)
    finally:
        again.kill(signal.SIGTERM)
    assert len(accepted) == MESSAGES
    assert accepted <= {r["id"] for r in rows}
    assert len([r for r in rows if r["kind"] == "checkin"]) == CHECKINS
    assert len(pane) == len(set(pane)) == MESSAGES + CHECKINS
