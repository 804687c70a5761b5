"""docs/contracts.md and the app's OpenAPI name the same routes: every documented route exists
with its method, and every route of the app is documented. The model broker's passthrough,
`/model/{path}` (any method), is outside the schema: it is checked by matching a request."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

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
