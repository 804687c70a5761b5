"""docs/contracts.md and the app's OpenAPI name the same routes: every documented route exists
with its method, and every route of the app is documented. The model broker's passthrough,
`/model/{path}` (any method), is outside the schema: it is checked by matching a request.
Every JSON route's success answer has a schema naming its fields, and the rows the contract
lists field by field (a message, a check-in, ...) have those fields in the schema."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.routing import Match

from agentvisor.config import Settings
from agentvisor.server.api.app import create_app
from agentvisor.server.auth import Authenticator
from agentvisor.server.inbox_waiters import InboxWaiters
from agentvisor.server.metrics import Metrics
from agentvisor.server.service import Service
from agentvisor.store.database import Store

CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# `/model/{path}` (any method): the broker passes every method on.
ANY_METHOD = re.compile(r"`(/[^`\s]+)` \(any method\)")
ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`")
# The answers that are not JSON: Prometheus text, a stream of server-sent events.
NOT_JSON = {("GET", "/metrics"), ("GET", "/v1/dashboard/pane/{}/{}/stream")}
# "A message as JSON: `{"id", ...}`", "A check-in: `{...}`": the rows listed field by field.
ROW_FIELDS = re.compile(
    r"(A message as JSON|A check-in|An agent|A project|An event|A queue entry):\s*`\{([^`]*)\}`"
)
ROW_MODELS = {
    "A message as JSON": "Message",
    "A check-in": "Checkin",
    "An agent": "Agent",
    "A project": "Project",
    "An event": "Event",
    "A queue entry": "QueueEntry",
}


def _path_shape(path: str) -> str:
    """`/v1/inbox/{message_id}/ack` and `/v1/inbox/{id}/ack` are the same route."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def documented_routes(text: str) -> set[tuple[str, str]]:
    section = text.split("## Host API (v1)", 1)[1].split("\n## ", 1)[0]
    routes: set[tuple[str, str]] = set()
    for line in section.splitlines():
        if not line.startswith("| "):
            continue
        first_cell = line.split(" | ", 1)[0]
        routes |= {(m, _path_shape(p)) for m, p in ROUTE.findall(first_cell)}
    return routes


def passthrough_paths(text: str) -> list[str]:
    section = text.split("## Host API (v1)", 1)[1].split("\n## ", 1)[0]
    return [p for line in section.splitlines() for p in ANY_METHOD.findall(line.split(" | ")[0])]


def _serves(app: FastAPI, method: str, path: str) -> bool:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    return any(route.matches(scope)[0] is Match.FULL for route in app.routes)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    store = Store(tmp_path / "agentvisor.db")
    service = Service(Settings(state_dir=tmp_path), store, None, InboxWaiters(), Metrics())
    yield create_app(service, Authenticator(store, "operator-token"))
    store.close()


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    schema = app.openapi()
    return {
        (method.upper(), _path_shape(path))
        for path, operations in schema["paths"].items()
        for method in operations
        if method.upper() in METHODS
    }


def test_every_documented_route_is_served_and_every_served_route_is_documented(
    app: FastAPI,
) -> None:
    documented = documented_routes(CONTRACTS.read_text(encoding="utf-8"))
    served = app_routes(app)
    assert sorted(documented - served) == [], "in docs/contracts.md, not in the app"
    assert sorted(served - documented) == [], "in the app, not in docs/contracts.md"


def test_the_documented_model_passthrough_takes_every_method(app: FastAPI) -> None:
    paths = passthrough_paths(CONTRACTS.read_text(encoding="utf-8"))
    assert paths == ["/model/{path}"]
    for method in METHODS:
        assert _serves(app, method, "/model/v1/messages"), method
    assert not _serves(app, "GET", "/v1/not-a-route")


def _resolve(schema: dict[str, Any], openapi: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def names_fields(schema: dict[str, Any], openapi: dict[str, Any]) -> bool:
    """An object schema with named properties, a list of them, or a choice of them."""
    schema = _resolve(schema, openapi)
    if "anyOf" in schema:
        return all(names_fields(option, openapi) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return names_fields(schema.get("items", {}), openapi)
    return bool(schema.get("properties"))


def test_every_documented_route_answers_with_a_schema_naming_its_fields(app: FastAPI) -> None:
    openapi = app.openapi()
    operations = {
        (method.upper(), _path_shape(path)): operation
        for path, item in openapi["paths"].items()
        for method, operation in item.items()
    }
    vague = []
    for route in sorted(documented_routes(CONTRACTS.read_text(encoding="utf-8")) - NOT_JSON):
        answers = [
            answer["content"]["application/json"]["schema"]
            for status, answer in operations[route]["responses"].items()
            if status.startswith("2") and "application/json" in answer.get("content", {})
        ]
        if not answers or not all(names_fields(schema, openapi) for schema in answers):
            vague.append(route)
    assert vague == [], "routes whose success answer names no fields in /openapi.json"


def test_the_rows_the_contract_lists_have_the_fields_of_their_schema(app: FastAPI) -> None:
    schemas = app.openapi()["components"]["schemas"]
    text = " ".join(CONTRACTS.read_text(encoding="utf-8").split())  # the lists wrap
    listed = {row: re.findall(r'"(\w+)"', fields) for row, fields in ROW_FIELDS.findall(text)}
    assert set(listed) == set(ROW_MODELS), "a row the contract lists went missing"
    for row, fields in listed.items():
        model = ROW_MODELS[row]
        assert sorted(fields) == sorted(schemas[model]["properties"]), (row, model)
