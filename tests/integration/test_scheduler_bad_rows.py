"""Nothing one row does stops the scheduler: check-ins an older or buggy version left in the
store (planted here straight into the SQLite file of a running server) are set aside as
`failed`, with an event, and every other project's check-ins still fire."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

from tests.conftest import REPO, ServerProcess
from tests.helpers import wait_until

BAD_ROWS = {
    "due_at -Infinity": {"due_at": float("-inf")},
    "due_at as text": {"due_at": "soon"},
    "every_s 1e-300": {"every_s": 1e-300},
    "every_s 1 ms": {"every_s": 0.001},
    "every_s NaN text": {"every_s": "NaN"},
    "every_s negative": {"every_s": -60.0},
    "recipient gone": {"recipient_id": 999_999},
}


def plant(
    server: ServerProcess,
    project_id: int,
    recipient_id: int,
    *only: dict[str, object],
) -> list[int]:
    conn = sqlite3.connect(server.settings.db_path, timeout=30, isolation_level=None)
    ids = []
    changes = {f"row {i}": c for i, c in enumerate(only)} if only else BAD_ROWS
    try:
        for name, change in changes.items():
            row = {
                "project_id": project_id,
                "creator": "operator",
                "recipient_id": recipient_id,
                "note": name,
                "due_at": time.time() - 10,
                "every_s": None,
                "state": "pending",
                "fired_count": 0,
                "created_at": time.time(),
                **change,
            }
            note = row.pop("note")
            columns = ", ".join([*row, "note"])
            # A note of bytes goes in as TEXT that is not UTF-8, as a buggy writer could leave.
            note_sql = "CAST(? AS TEXT)" if isinstance(note, bytes) else "?"
            cursor = conn.execute(
                f"INSERT INTO checkins ({columns}) VALUES "
                f"({', '.join('?' for _ in row)}, {note_sql})",
                (*row.values(), note),
            )
            ids.append(int(cursor.lastrowid or 0))
    finally:
        conn.close()
    return ids


def test_a_bad_check_in_row_does_not_stop_other_projects_check_ins(server: ServerProcess):
    alpha = server.client_for(server.register_agent("alpha", "orchestrator"))
    beta = server.client_for(server.register_agent("beta", "orchestrator"))
    alpha_agent = alpha.get("/v1/whoami")
    planted = plant(server, alpha.get("/v1/projects")[0]["id"], alpha_agent["agent_id"])
    # Not UTF-8: read with U+FFFD in place of the bad bytes, and fired, never a failed query.
    [mangled] = plant(
        server,
        alpha.get("/v1/projects")[0]["id"],
        alpha_agent["agent_id"],
        {"note": b"\xff\xfe bad"},
    )

    # Another project's check-in, due in 0.6 s, wakes the scheduler onto the bad rows.
    beta.post("/v1/checkins", {"minutes": 0.01, "note": "beta still fires"})
    got = wait_until(lambda: beta.get("/v1/inbox"), timeout_s=15, message="beta's check-in")
    assert "beta still fires" in got[0]["body"]

    operator = server.client
    states = {
        c["id"]: c["state"] for c in operator.get("/v1/checkins", project="alpha", state="all")
    }
    assert {states[i] for i in planted} == {"failed"}, states
    assert states[mangled] == "fired"
    assert any("\ufffd bad" in m["body"] for m in alpha.get("/v1/inbox"))
    events = [e for e in operator.get("/v1/events", limit=200) if e["kind"] == "checkin.failed"]
    assert {e["data"]["checkin_id"] for e in events} == set(planted)
    assert all(e["data"]["reason"] for e in events)

    # And it goes on: the next check-ins of both projects fire too.
    alpha.post("/v1/checkins", {"minutes": 0.01, "note": "alpha goes on"})
    beta.post("/v1/checkins", {"minutes": 0.01, "note": "beta goes on"})
    wait_until(lambda: alpha.get("/v1/inbox"), timeout_s=15, message="alpha's new check-in")
    wait_until(lambda: len(beta.get("/v1/inbox")) == 2, timeout_s=15, message="beta's second")
    assert "Traceback" not in server.log_tail()  # nothing crashed on the way


def test_the_operator_is_told_of_failed_check_ins(server: ServerProcess):
    alpha = server.client_for(server.register_agent("alpha", "orchestrator"))
    plant(server, alpha.get("/v1/projects")[0]["id"], alpha.get("/v1/whoami")["agent_id"])
    alpha.post("/v1/checkins", {"minutes": 0.01, "note": "wake up"})
    operator = server.client
    wait_until(
        lambda: len(operator.get("/v1/checkins", project="alpha", state="failed")) == len(BAD_ROWS),
        timeout_s=15,
        message="the bad rows to be set aside",
    )
    result = subprocess.run(
        [sys.executable, "-m", "agentvisor", "--state", str(server.state_dir), "checkins"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"{len(BAD_ROWS)} check-in(s) could not fire and were set aside" in result.stderr
