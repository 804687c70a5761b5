"""Strict input at the host API: every bad value is a 4xx saying what is wrong, never a 5xx,
never stored. Each test replays a finding of issue 13 over the real Unix socket."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.helpers import wait_until

BIG_ID = "99999999999999999999"  # above 2^63 - 1, SQLite's largest integer


ROLES = ("orchestrator", "developer", "tester", "reviewer")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One server for the module (each test leaves the state as it found it, or looks only at
    what it changed): these tests are many and each is one request."""
    tmp = Path(tempfile.mkdtemp(prefix="av-", dir="/tmp"))
    proc = ServerProcess(tmp / "state").start()
    yield proc
    proc.kill(signal.SIGTERM)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def tokens(server: ServerProcess) -> dict[str, str]:
    return {role: server.register_agent("demo", role) for role in ROLES}


def raw(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(server.socket_path)),
        base_url="http://agentvisor",
        headers={"content-type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )


def post_text(server: ServerProcess, token: str, path: str, text: str) -> httpx.Response:
    """POST `text` as the body exactly (Python's json accepts NaN and lone surrogates; the
    point is what the server does with them)."""
    with raw(server, token) as http:
        return http.post(path, content=text.encode("utf-8"))


def assert_refused(response: httpx.Response, *words: str) -> str:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail, detail
    return detail


def db(server: ServerProcess) -> sqlite3.Connection:
    return sqlite3.connect(server.settings.db_path, timeout=30, isolation_level=None)


def checkin_count(server: ServerProcess) -> int:
    with db(server) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM checkins").fetchone()[0])


# -- numbers -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["-Infinity", "Infinity", "NaN", "1e400"])
def test_a_check_in_due_at_minus_infinity_is_refused(server: ServerProcess, tokens, value):
    before = checkin_count(server)
    response = post_text(
        server, tokens["developer"], "/v1/checkins", f'{{"note": "n", "due_at": {value}}}'
    )
    assert_refused(response, "due_at", "finite")
    assert checkin_count(server) == before


@pytest.mark.parametrize("due_at", [0, -1e308, -1, "two days ago"])
def test_a_check_in_due_at_far_in_the_past_is_refused(server: ServerProcess, tokens, due_at):
    value = time.time() - 2 * 86400 if due_at == "two days ago" else due_at
    before = checkin_count(server)
    response = post_text(
        server, tokens["developer"], "/v1/checkins", json.dumps({"note": "n", "due_at": value})
    )
    assert_refused(response, "due_at", "a day ago")
    assert checkin_count(server) == before


def test_a_check_in_due_at_in_milliseconds_is_refused(server: ServerProcess, tokens):
    response = post_text(
        server,
        tokens["developer"],
        "/v1/checkins",
        json.dumps({"note": "n", "due_at": time.time() * 1000}),
    )
    assert_refused(response, "more than a year away")


def test_a_check_in_due_a_minute_ago_is_accepted_and_fires_at_once(server: ServerProcess, tokens):
    response = post_text(
        server,
        tokens["reviewer"],
        "/v1/checkins",
        json.dumps({"note": "catch up", "due_at": time.time() - 60}),
    )
    assert response.status_code == 201, response.text
    reviewer = server.client_for(tokens["reviewer"])
    wait_until(lambda: reviewer.get("/v1/inbox"), timeout_s=10, message="the check-in to fire")


@pytest.mark.parametrize(
    ("field", "value"), [("minutes", "NaN"), ("every_minutes", "Infinity"), ("minutes", "-1e999")]
)
def test_non_finite_minutes_are_refused(server: ServerProcess, tokens, field, value):
    other = ', "minutes": 5' if field == "every_minutes" else ""
    response = post_text(
        server, tokens["developer"], "/v1/checkins", f'{{"note": "n", "{field}": {value}{other}}}'
    )
    assert_refused(response, field, "finite")


def test_a_string_is_not_taken_for_a_number(server: ServerProcess, tokens):
    response = post_text(
        server, tokens["developer"], "/v1/checkins", '{"note": "n", "minutes": "5"}'
    )
    assert_refused(response, "minutes")


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/v1/inbox/lease", "wait_s=nan"),
        ("/v1/inbox/lease", "wait_s=inf"),
        ("/v1/usage", "since=inf"),
        ("/v1/usage/chart", "hours=nan"),
    ],
)
def test_a_non_finite_query_parameter_is_refused(server: ServerProcess, tokens, path, query):
    with raw(server, tokens["developer"]) as http:
        method = "POST" if path.startswith("/v1/inbox") else "GET"
        response = http.request(method, f"{path}?{query}")
    assert_refused(response, query.split("=")[0], "finite")


def test_a_budget_of_infinite_hours_is_refused(server: ServerProcess, tokens):
    response = post_text(
        server, server.operator_token, "/v1/budget", '{"project": "demo", "project_hours": 1e999}'
    )
    assert_refused(response, "project_hours", "finite")


# -- ids -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body", "who"),
    [
        ("DELETE", f"/v1/checkins/{BIG_ID}", None, "developer"),
        ("DELETE", f"/v1/checkins/{BIG_ID}", None, "operator"),
        ("GET", f"/v1/queue/{BIG_ID}", None, "operator"),
        ("DELETE", f"/v1/queue/{BIG_ID}", None, "operator"),
        ("POST", f"/v1/messages/{BIG_ID}/action", {"action": "cancel"}, "operator"),
        ("POST", f"/v1/inbox/{BIG_ID}/ack", {"lease_id": "x"}, "developer"),
        ("POST", f"/v1/inbox/{BIG_ID}/nack", {"lease_id": "x"}, "developer"),
        ("POST", f"/v1/inbox/{BIG_ID}/extend", {"lease_id": "x"}, "developer"),
        ("POST", "/v1/inbox/-4456211982842202508144018456576/ack", {"lease_id": "x"}, "developer"),
    ],
)
def test_a_path_id_above_2_63_is_a_4xx(server: ServerProcess, tokens, method, path, body, who):
    token = server.operator_token if who == "operator" else tokens[who]
    with raw(server, token) as http:
        response = http.request(method, path, json=body)
    assert_refused(response, "_id")


def test_the_largest_sqlite_id_is_a_404_not_a_5xx(server: ServerProcess, tokens):
    with raw(server, tokens["developer"]) as http:
        response = http.delete(f"/v1/checkins/{2**63 - 1}")
    assert response.status_code == 404, response.text


# -- text ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/messages", '{"to": "orchestrator", "body": "hi \\ud800"}', "body"),
        ("/v1/checkins", '{"minutes": 5, "note": "\\udfff"}', "note"),
        ("/v1/messages", '{"to": "orchestrator\\ud800", "body": "x"}', "to"),
        ("/v1/done", '{"summary": "done \\udc80"}', "summary"),
        ("/v1/events", '{"kind": "note", "data": {"k\\ud800": 1}}', "data"),
        ("/v1/events", '{"kind": "note", "data": {"k": ["\\ud800"]}}', "data"),
        ("/v1/heartbeat", '{"state": "\\ud800"}', "state"),
        ("/v1/inbox/1/ack", '{"lease_id": "2\\udb43x"}', "lease_id"),
    ],
)
def test_a_lone_surrogate_in_a_body_is_refused(server: ServerProcess, tokens, path, body, field):
    response = post_text(server, tokens["developer"], path, body)
    assert_refused(response, field, "lone surrogate")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/projects", '{"name": "p", "spec_path": "/tmp/a\\u0000b"}', "spec_path"),
        ("/v1/queue", '{"spec_path": "/tmp/a\\u0000.md"}', "spec_path"),
        ("/v1/queue", '{"spec_path": "/tmp/x.md", "project_dir": "/tmp/\\ud800"}', "project_dir"),
        ("/v1/queue", '{"spec_path": "/tmp/x.md", "options": {"\\ud884": 1}}', "options"),
        ("/v1/projects", '{"name": "p\\u0000"}', "name"),
    ],
)
def test_a_nul_or_surrogate_in_an_operator_field_is_refused(
    server: ServerProcess, tokens, path, body, field
):
    response = post_text(server, server.operator_token, path, body)
    assert_refused(response, field)


@pytest.mark.parametrize("spec_path", ["~nosuchuser4242/spec.md", "/proc/self/mem", "/"])
def test_a_spec_path_that_names_no_spec_is_a_4xx(server: ServerProcess, tokens, spec_path):
    # Found by schemathesis: "~user" for a user the machine lacks was a 500.
    with raw(server, server.operator_token) as http:
        response = http.post("/v1/queue", json={"spec_path": spec_path})
    assert_refused(response, "Spec")


def test_a_nul_in_a_query_parameter_is_refused(server: ServerProcess, tokens):
    with raw(server, server.operator_token) as http:
        response = http.get("/v1/queue", params={"state": "a\x00b"})
    assert_refused(response, "state", "NUL")


# -- heartbeats and events -----------------------------------------------------------------
def agent_row(server: ServerProcess, role: str) -> dict[str, Any]:
    with db(server) as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT * FROM agents WHERE role = ?", (role,)).fetchone())


def test_a_heartbeat_info_too_large_is_refused_not_truncated(server: ServerProcess, tokens):
    dev = raw(server, tokens["developer"])
    ok = dev.post("/v1/heartbeat", json={"state": "idle", "info": {"pane_hash": "a"}})
    assert ok.status_code == 200, ok.text
    big = dev.post("/v1/heartbeat", json={"state": "idle", "info": {"blob": "x" * 20_000}})
    assert_refused(big, "info", "over the limit")
    stored = agent_row(server, "developer")["info"]
    assert json.loads(stored) == {"pane_hash": "a"}  # kept whole, the big one not stored at all
    again = dev.post("/v1/heartbeat", json={"state": "idle", "info": {"pane_hash": "b"}})
    assert again.status_code == 200, again.text
    assert json.loads(agent_row(server, "developer")["info"]) == {"pane_hash": "b"}


def test_a_heartbeat_after_info_cut_by_an_older_version_succeeds(server: ServerProcess, tokens):
    # What main before issue 13 stored for an info over 4,000 characters: JSON cut mid-string.
    with db(server) as conn:
        conn.execute("UPDATE agents SET info = ? WHERE role = 'developer'", ('{"blob": "xxxx',))
    with raw(server, tokens["developer"]) as dev:
        response = dev.post("/v1/heartbeat", json={"state": "idle", "info": {"pane_hash": "c"}})
    assert response.status_code == 200, response.text
    assert json.loads(agent_row(server, "developer")["info"]) == {"pane_hash": "c"}


def test_a_heartbeat_state_too_long_is_refused_not_cut(server: ServerProcess, tokens):
    with raw(server, tokens["developer"]) as dev:
        response = dev.post("/v1/heartbeat", json={"state": "w" * 41})
    assert_refused(response, "state")
    assert agent_row(server, "developer")["state"] != "w" * 40


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN", "1e308", '"inf"', "true"])
def test_a_usage_limit_paused_until_infinity_is_refused(server: ServerProcess, tokens, value):
    before = checkin_count(server)
    response = post_text(
        server,
        tokens["developer"],
        "/v1/events",
        f'{{"kind": "usage_limit", "data": {{"notice": "limit", "paused_until": {value}}}}}',
    )
    assert_refused(response, "paused_until")
    agent = agent_row(server, "developer")
    assert not agent["paused_until"], "a refused event must not pause the agent"
    assert checkin_count(server) == before


def test_a_usage_limit_with_a_sane_reset_still_pauses(server: ServerProcess, tokens):
    reset = time.time() + 3600
    response = post_text(
        server,
        tokens["tester"],
        "/v1/events",
        json.dumps({"kind": "usage_limit", "data": {"notice": "x", "paused_until": reset}}),
    )
    assert response.status_code == 201, response.text
    assert agent_row(server, "tester")["paused_until"] >= reset


@pytest.mark.parametrize("data", ['{"x": NaN}', '{"x": [1, Infinity]}', '{"a": {"b": -Infinity}}'])
def test_a_non_finite_number_in_event_data_is_refused(server: ServerProcess, tokens, data):
    response = post_text(
        server, tokens["developer"], "/v1/events", f'{{"kind": "note", "data": {data}}}'
    )
    assert_refused(response, "data", "finite")


def test_event_data_too_large_is_refused(server: ServerProcess, tokens):
    with raw(server, tokens["developer"]) as dev:
        response = dev.post("/v1/events", json={"kind": "note", "data": {"x": "y" * 70_000}})
    assert_refused(response, "data", "over the limit")


# -- the schema ------------------------------------------------------------------------------
def test_the_schema_documents_the_real_error_shape(server: ServerProcess):
    with raw(server, "") as http:
        schema = http.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    error = schema["components"]["schemas"]["ErrorBody"]
    assert error["properties"]["detail"]["type"] == "string"
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for status, answer in responses.items():
                if int(status) >= 400:
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (method, path, status)
            if path != "/v1/health" and path != "/metrics":
                assert {"401", "422"} <= set(responses), (method, path)
