"""No ghost leases (issue 14): a long poll left open by a shim that died, or superseded by a new
shim, leases nothing; a stopped project's agents lease nothing, so a message sent after `down`
waits, queued and cancellable, for `resume`. The polls a dead shim leaves open against a real
server over its socket; the rest against the real app in process."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from agentvisor.errors import Forbidden
from tests.conftest import ServerProcess
from tests.helpers import wait_until
from tests.in_process_api import InProcessServer


def _message(host: ServerProcess | InProcessServer, message_id: int) -> dict:
    rows = host.client.get("/v1/messages", project="demo", limit=500)
    return next(m for m in rows if m["id"] == message_id)


def _open_poll(server: ServerProcess, token: str, wait_s: float = 20) -> socket.socket:
    """A shim's long poll, as its process leaves it when killed: sent, never read."""
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(str(server.socket_path))
    raw.sendall(
        f"POST /v1/inbox/lease?wait_s={wait_s} HTTP/1.1\r\nHost: agentvisor\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n".encode()
    )
    time.sleep(0.3)  # the server is waiting in it now
    return raw


def test_a_poll_left_open_by_a_killed_shim_does_not_lease_the_next_message(
    server: ServerProcess,
):
    token = server.register_agent("demo", "developer")
    _open_poll(server, token).close()  # kill -9: the connection goes, the request stays
    sent = server.client.post("/v1/messages", {"project": "demo", "to": "developer", "body": "x"})
    time.sleep(1.5)  # the orphan poll wakes for the message (and re-checks each second)
    assert _message(server, sent["id"])["state"] == "queued"
    # The restarted shim gets it at once, leased for the first time.
    lease = server.client_for(token).post("/v1/inbox/lease", wait_s=0)
    assert lease["message"]["id"] == sent["id"] and lease["message"]["leases"] == 1


def test_a_new_shims_poll_supersedes_the_old_one_which_leases_nothing(server: ServerProcess):
    token = server.register_agent("demo", "developer")
    old = _open_poll(server, token)  # a shim that hangs, its connection still up
    try:
        new_shim = server.client_for(token)
        assert new_shim.post("/v1/inbox/release") == {"released": 0}
        got: dict = {}

        def poll() -> None:
            got["lease"] = new_shim.post("/v1/inbox/lease", wait_s=10)

        thread = threading.Thread(target=poll)
        thread.start()
        time.sleep(0.3)
        sent = server.client.post(
            "/v1/messages", {"project": "demo", "to": "developer", "body": "y"}
        )
        thread.join(timeout=10)
        assert got["lease"]["message"]["id"] == sent["id"]
        assert got["lease"]["message"]["leases"] == 1
        # The old poll answered "nothing" (204) as soon as it was superseded.
        old.settimeout(5)
        assert old.recv(200).startswith(b"HTTP/1.1 204")
    finally:
        old.close()


def test_a_message_sent_after_down_waits_queued_and_cancellable_until_resume(
    api: InProcessServer,
):
    token = api.register_agent("demo", "developer")
    agent = api.client_for(token)
    held = agent.post("/v1/inbox/lease", wait_s=0)
    assert held is None
    first = api.client.post("/v1/messages", {"project": "demo", "to": "developer", "body": "1"})
    leased = agent.post("/v1/inbox/lease", wait_s=0)
    assert leased["message"]["id"] == first["id"]
    # `down`: the project is stopped, then what its shims held goes back.
    api.client.post("/v1/projects/demo/state", {"state": "stopped"})
    assert api.client.post("/v1/projects/demo/release") == {"released": 1}
    later = api.client.post("/v1/messages", {"project": "demo", "to": "developer", "body": "2"})
    assert agent.post("/v1/inbox/lease", wait_s=1) is None  # a sandbox still stopping
    assert _message(api, later["id"])["state"] == "queued"
    api.client.post(f"/v1/messages/{later['id']}/action", {"action": "cancel"})
    assert _message(api, later["id"])["state"] == "cancelled"
    # `resume`: the first message comes again, the cancelled one never.
    api.client.post("/v1/projects/demo/state", {"state": "running"})
    again = agent.post("/v1/inbox/lease", wait_s=0)
    assert again["message"]["id"] == first["id"]
    assert agent.post("/v1/inbox/lease", wait_s=0) is None


def test_only_the_operator_releases_a_projects_leases(api: InProcessServer):
    agent = api.client_for(api.register_agent("demo", "developer"))
    with pytest.raises(Forbidden):
        agent.post("/v1/projects/demo/release")
    wait_until(lambda: api.client.post("/v1/projects/demo/release") == {"released": 0})
