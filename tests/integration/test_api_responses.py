"""The answers' models drop nothing and name everything: every JSON route of the app is called
once (in process), and each answer is checked twice.

- What the route's code returned and what its response model let out are the same JSON: a
  model missing a field would silently drop it from the answer (agent_shim reads several).
- The answer's keys, at every depth, are the ones its OpenAPI schema names (the hot routes,
  whose models document their answers only, included), and the schema's required ones are there.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from fastapi.encoders import jsonable_encoder

from tests.in_process_api import InProcessServer

# Routes whose answer is not JSON (or is nothing at all).
NOT_JSON = {
    ("GET", "/metrics"),
    ("GET", "/v1/dashboard/pane/{project}/{role}/stream"),
}


@dataclass
class Served:
    """One answer as its route's code returned it and as the response model serialised it."""

    route: str  # "GET /v1/messages"
    returned: Any
    sent: Any


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Served]:
    """Every answer a route with a response model gives, before and after its model."""
    seen: list[Served] = []
    original = fastapi.routing.serialize_response

    async def recording(**kwargs: Any) -> Any:
        out = await original(**kwargs)
        if kwargs.get("field") is not None:
            sent = json.loads(out) if isinstance(out, bytes) else out
            route = (kwargs.get("endpoint_ctx") or {}).get("path", "?")
            seen.append(Served(route, jsonable_encoder(kwargs["response_content"]), sent))
        return out

    monkeypatch.setattr(fastapi.routing, "serialize_response", recording)
    return seen


@dataclass
class Caller:
    """Calls routes by their template and checks each answer against the OpenAPI schema."""

    api: InProcessServer
    schema: dict[str, Any]
    called: set[tuple[str, str]] = field(default_factory=set)

    def __call__(
        self,
        token: str | None,
        method: str,
        route: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        **path: Any,
    ) -> Any:
        with self.api.http(token or self.api.operator_token) as http:
            answer = http.request(method, route.format(**path), json=body, params=params)
        assert answer.is_success, (route, answer.status_code, answer.text)
        self.called.add((method, route))
        documented = self.schema["paths"][route][method.lower()]["responses"]
        content = documented[str(answer.status_code)].get("content", {})
        assert "application/json" in content, f"{method} {route} {answer.status_code}: no schema"
        value = answer.json()
        problems = undocumented(value, content["application/json"]["schema"], self.schema)
        assert problems == [], f"{method} {route}: {problems}"
        return value


def _resolve(schema: dict[str, Any], openapi: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = openapi["components"]["schemas"][name]
    return schema


def undocumented(value: Any, schema: dict[str, Any], openapi: dict[str, Any], at: str = "") -> list:
    """The keys of `value` its schema does not name and the required ones it lacks, at every
    depth (an object without named properties, `dict[str, Any]`, is open)."""
    schema = _resolve(schema, openapi)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if _resolve(o, openapi).get("type") != "null"]
        if value is None:
            return [] if len(options) < len(schema["anyOf"]) else [f"{at}: null"]
        found = [undocumented(value, o, openapi, at) for o in options]
        return [] if [] in found else min(found, key=len)
    if isinstance(value, list) and "items" in schema:
        items = schema["items"]
        return [
            p for i, v in enumerate(value) for p in undocumented(v, items, openapi, f"{at}[{i}]")
        ]
    if isinstance(value, dict) and schema.get("properties"):
        named = schema["properties"]
        problems = [f"{at}.{k}: not in the schema" for k in value if k not in named]
        problems += [f"{at}.{k}: missing" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key in named:
                problems += undocumented(item, named[key], openapi, f"{at}.{key}")
        return problems
    return []


def differences(returned: Any, sent: Any, at: str = "") -> list[str]:
    """Where the answer sent differs from what the route returned: keys dropped or added,
    values changed."""
    if isinstance(returned, dict) and isinstance(sent, dict):
        out = [f"{at}.{k}: dropped" for k in returned if k not in sent]
        out += [f"{at}.{k}: added" for k in sent if k not in returned]
        for key in returned.keys() & sent.keys():
            out += differences(returned[key], sent[key], f"{at}.{key}")
        return out
    if isinstance(returned, list) and isinstance(sent, list) and len(returned) == len(sent):
        pairs = enumerate(zip(returned, sent, strict=True))
        return [d for i, (r, s) in pairs for d in differences(r, s, f"{at}[{i}]")]
    return [] if returned == sent else [f"{at}: {returned!r} became {sent!r}"]


def json_routes(schema: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
        if (method.upper(), path) not in NOT_JSON
    }


def test_every_answer_is_what_its_route_returned_and_what_its_schema_names(
    api: InProcessServer, served: list[Served], tmp_path: Path
) -> None:
    assert api.app is not None
    call = Caller(api, api.app.openapi())
    spec = tmp_path / "spec.md"
    spec.write_text("# A greeter\n\nA command line tool that says hello.\n", encoding="utf-8")

    # Projects and agents.
    call(None, "POST", "/v1/projects", {"name": "demo", "path": str(tmp_path)})
    orch = call(None, "POST", "/v1/agents", {"project": "demo", "role": "orchestrator"})["token"]
    dev = call(None, "POST", "/v1/agents", {"project": "demo", "role": "developer"})["token"]
    call(None, "GET", "/v1/projects")
    call(dev, "GET", "/v1/projects")
    call(None, "GET", "/v1/agents")
    call(None, "GET", "/v1/whoami")
    call(dev, "GET", "/v1/whoami")
    call(None, "GET", "/v1/health")
    call(None, "GET", "/v1/projects/{name}/routing", name="demo")
    call(None, "POST", "/v1/projects/{name}/routing", {"hub_only": False}, name="demo")
    call(None, "POST", "/v1/projects/{name}/state", {"state": "running"}, name="demo")
    model = {"upstream": "http://127.0.0.1:9"}
    call(None, "POST", "/v1/projects/{name}/model", model, name="demo")

    # Messages and the shim's inbox.
    sent = {"project": "demo", "to": "developer", "body": "first", "idempotency_key": "k1"}
    call(None, "POST", "/v1/messages", sent)
    call(None, "POST", "/v1/messages", sent)  # the replay: 200 with the first one
    call(orch, "POST", "/v1/messages", {"to": "developer", "body": "second"})
    call(None, "GET", "/v1/messages")
    call(dev, "GET", "/v1/inbox")
    lease = call(dev, "POST", "/v1/inbox/lease", params={"wait_s": 0})
    first = lease["message"]["id"]
    ref = {"lease_id": lease["lease_id"]}
    call(dev, "POST", "/v1/inbox/{message_id}/extend", ref, message_id=first)
    acked = call(
        dev, "POST", "/v1/inbox/{message_id}/ack", ref, {"lease_next": "true"}, message_id=first
    )
    assert acked["next"] is not None
    second = acked["next"]["message"]["id"]
    call(dev, "POST", "/v1/inbox/{message_id}/ack", ref, message_id=first)  # again: no "next"
    nack = {"lease_id": acked["next"]["lease_id"], "reason": "busy"}
    call(dev, "POST", "/v1/inbox/{message_id}/nack", nack, message_id=second)
    call(dev, "POST", "/v1/inbox/release")
    call(None, "POST", "/v1/projects/{name}/release", name="demo")
    call(dev, "POST", "/v1/heartbeat", {"state": "idle", "info": {"pane_hash": "abc"}})
    call(None, "POST", "/v1/messages/{message_id}/action", {"action": "cancel"}, message_id=second)

    # Check-ins, events, reports.
    checkin = {"minutes": 5, "note": "look again", "every_minutes": 60, "idempotency_key": "c"}
    call(dev, "POST", "/v1/checkins", checkin)
    call(dev, "POST", "/v1/checkins", checkin)  # the replay
    for_dev = {"project": "demo", "to": "developer", "minutes": 5, "note": "n"}
    own = call(None, "POST", "/v1/checkins", for_dev)
    call(None, "GET", "/v1/checkins")
    call(None, "DELETE", "/v1/checkins/{checkin_id}", checkin_id=own["id"])
    call(dev, "POST", "/v1/events", {"kind": "hook_stop", "data": {"turn": 1}})
    call(None, "GET", "/v1/events")
    call(dev, "POST", "/v1/done", {"summary": "the greeter works"})
    call(orch, "POST", "/v1/done", {"summary": "all done"})

    # The queue (this server has no launcher: its entries fail at once, as entries do).
    entry = call(None, "POST", "/v1/queue", {"spec_path": str(spec)})
    call(None, "GET", "/v1/queue")
    call(None, "GET", "/v1/queue/{queue_id}", queue_id=entry["id"])
    later = call(None, "POST", "/v1/queue", {"spec_path": str(spec)})
    with api.http(api.operator_token) as http:  # cancelled unless it already failed
        http.delete(f"/v1/queue/{later['id']}")
    call.called.add(("DELETE", "/v1/queue/{queue_id}"))

    # Egress, model usage, the team assistant, the dashboard.
    call(None, "POST", "/v1/egress/rules", {"project": "demo", "entry": "example.com"})
    call(None, "GET", "/v1/egress/rules", params={"project": "demo"})
    call(None, "GET", "/v1/egress/requests")
    rule = {"project": "demo", "entry": "example.com"}
    call(None, "DELETE", "/v1/egress/rules", params=rule)
    call(None, "GET", "/v1/usage")
    call(None, "GET", "/v1/usage", params={"project": "demo"})
    call(None, "GET", "/v1/usage/chart", params={"project": "demo"})
    call(None, "POST", "/v1/budget", {"project": "demo", "project_tokens": 100_000})
    call(None, "POST", "/v1/assist/team", {"project": "demo", "spec": spec.read_text()})
    call(None, "GET", "/v1/dashboard/state")

    assert sorted(json_routes(call.schema) - call.called) == [], "routes this test does not call"
    changed = [(s.route, differences(s.returned, s.sent)) for s in served if s.sent != s.returned]
    assert changed == [], "answers their response model changed"
    assert {s.route for s in served} >= {"GET /v1/messages", "GET /v1/dashboard/state"}


def test_a_check_in_row_with_a_time_stored_as_text_or_infinite_still_lists(
    api: InProcessServer,
) -> None:
    """Rows an older or buggy version left (docs/contracts.md, "Check-ins the scheduler cannot
    fire") list as they are, never a 500: the text as text, a non-finite number as null."""
    token = api.register_agent("demo", "developer")
    agent = api.client_for(token).get("/v1/whoami")
    project_id = api.client.get("/v1/projects")[0]["id"]
    conn = sqlite3.connect(api.settings.db_path, timeout=30, isolation_level=None)
    try:
        for note, due_at, every_s in (("text", "soon", "NaN"), ("inf", float("-inf"), None)):
            conn.execute(
                "INSERT INTO checkins (project_id, creator, recipient_id, note, due_at, every_s, "
                "state, fired_count, created_at) "
                "VALUES (?, 'operator', ?, ?, ?, ?, 'failed', 0, ?)",
                (project_id, agent["agent_id"], note, due_at, every_s, time.time()),
            )
    finally:
        conn.close()
    listed = {c["note"]: c for c in api.client.get("/v1/checkins", state="failed")}
    assert (listed["text"]["due_at"], listed["text"]["every_s"]) == ("soon", "NaN")
    assert listed["inf"]["due_at"] is None
