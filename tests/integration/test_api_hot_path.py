"""The delivery hot path below FastAPI (server/api/hot_routes.py) answers as the FastAPI routes
do: the same status, the same fields, the same errors. A request with a query name the hot path
does not know goes on to the FastAPI route (which ignores the name), so each pair below is the
same request answered once by each."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import team_clients
from tests.in_process_api import InProcessServer

VIA_APP = {"via": "app"}  # a name the hot path does not take: FastAPI answers


@pytest.fixture
def tokens(api: InProcessServer) -> dict[str, str]:
    team_clients(api)  # registers the team
    return {role: api.register_agent("demo", role) for role in ("orchestrator", "developer")}


def _shape(answer: httpx.Response) -> tuple[int, object]:
    """The status and the answer's fields with the types of their values."""
    if answer.status_code == 204:
        return 204, None
    body = answer.json()
    if isinstance(body, dict):
        return answer.status_code, {k: type(v).__name__ for k, v in body.items()}
    return answer.status_code, body


def _hot_served(api: InProcessServer) -> float:
    assert api.service is not None
    return sum(v for (name, _), v in api.service.metrics.counters.items()
               if name == "api_hot_path_requests")  # fmt: skip


def test_hot_routes_answer_as_the_fastapi_routes_do(api: InProcessServer, tokens):
    orchestrator = api.http(tokens["orchestrator"])
    developer = api.http(tokens["developer"])
    served = _hot_served(api)

    def both(client: httpx.Client, path: str, body: dict | None, query: dict | None = None):
        hot = client.post(path, json=body, params=query)
        app = client.post(path, json=body, params={**(query or {}), **VIA_APP})
        return hot, app

    # send: created, then replayed by its idempotency key
    sent = [
        orchestrator.post("/v1/messages", json={"to": "developer", "body": f"m{i}"}, params=q)
        for i, q in enumerate(({}, VIA_APP, {}, VIA_APP))
    ]
    assert _shape(sent[0]) == _shape(sent[1]) and sent[0].status_code == 201
    key = {"to": "developer", "body": "once", "idempotency_key": "k1"}
    first = orchestrator.post("/v1/messages", json=key)
    replays = both(orchestrator, "/v1/messages", key)
    assert [r.status_code for r in (first, *replays)] == [201, 200, 200]
    assert replays[0].json() == replays[1].json() == first.json()

    # lease, extend, ack with the next lease, nack: each route once by each (one lease at a
    # time per agent, so they take turns)
    def held(answer: httpx.Response, inner: str | None = None) -> tuple[int, str]:
        lease = answer.json() if inner is None else answer.json()[inner]
        return lease["message"]["id"], lease["lease_id"]

    def act(action: str, lease: tuple[int, str], query: dict, **body: object) -> httpx.Response:
        return developer.post(
            f"/v1/inbox/{lease[0]}/{action}", json={"lease_id": lease[1], **body}, params=query
        )

    hot_lease = developer.post("/v1/inbox/lease", params={"wait_s": "0"})
    first_lease = held(hot_lease)
    hot_extend = act("extend", first_lease, {})
    app_ack = act("ack", first_lease, {"lease_next": "true", **VIA_APP})
    second_lease = held(app_ack, "next")
    app_extend = act("extend", second_lease, VIA_APP)
    hot_ack = act("ack", second_lease, {"lease_next": "true"})
    third_lease = held(hot_ack, "next")
    hot_nack = act("nack", third_lease, {}, reason="busy")
    app_lease = developer.post("/v1/inbox/lease", params={"wait_s": "0", **VIA_APP})
    app_nack = act("nack", held(app_lease), VIA_APP, reason="busy")
    assert hot_lease.status_code == 200 and _shape(hot_lease) == _shape(app_lease)
    assert _shape(hot_extend) == _shape(app_extend) and hot_extend.status_code == 200
    assert _shape(hot_ack) == _shape(app_ack)
    assert hot_ack.json()["state"] == app_ack.json()["state"] == "delivered"
    assert _shape(hot_nack) == _shape(app_nack) and hot_nack.status_code == 200
    assert hot_ack.json()["next"].keys() == app_ack.json()["next"].keys()
    wrong = both(developer, f"/v1/inbox/{first_lease[0]}/ack", {"lease_id": "not-it"})

    # errors: a lease that is not held, an operator on an agent's route, an empty inbox
    assert wrong[0].status_code == wrong[1].status_code == 409
    assert wrong[0].json() == wrong[1].json()
    operator = api.http(api.operator_token)
    refused = both(operator, "/v1/inbox/lease", None, {"wait_s": "0"})
    assert refused[0].status_code == refused[1].status_code == 403
    assert refused[0].json() == refused[1].json()
    tester = api.http(api.register_agent("demo", "tester"))
    empty = both(tester, "/v1/inbox/lease", None, {"wait_s": "0"})
    assert [e.status_code for e in empty] == [204, 204]

    # heartbeat
    beats = both(developer, "/v1/heartbeat", {"state": "idle", "info": {"pane": "abc"}})
    assert _shape(beats[0]) == _shape(beats[1]) and beats[0].status_code == 200
    # Each pair's first went by the hot path (the replays, leases and errors included).
    assert _hot_served(api) - served >= 11


def test_what_the_hot_path_does_not_take_gets_the_apps_own_answer(api: InProcessServer, tokens):
    orchestrator = api.http(tokens["orchestrator"])
    served = _hot_served(api)
    # a body that does not validate, one that is not JSON, an unknown token, a form body
    bad = orchestrator.post("/v1/messages", json={"to": "developer"})
    assert bad.status_code == 422 and "body" in bad.json()["detail"]
    garbled = orchestrator.post(
        "/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert garbled.status_code == 422 and "not valid JSON" in garbled.json()["detail"]
    stranger = api.http("avt_unknown").post("/v1/messages", json={"to": "developer", "body": "x"})
    assert stranger.status_code == 401 and "unknown or revoked token" in stranger.json()["detail"]
    form = orchestrator.post("/v1/messages", data={"to": "developer", "body": "x"})
    assert form.status_code == 422
    out_of_range = api.http(tokens["developer"]).post("/v1/inbox/lease", params={"wait_s": "61"})
    assert out_of_range.status_code == 422 and "wait_s" in out_of_range.json()["detail"]
    assert _hot_served(api) == served
