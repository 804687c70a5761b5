"""The model broker, end to end on this machine: a real `agentvisor serve` forwards an agent's
model requests, with the host's credential in place of the agent's stand-in, to the scripted
model server served over HTTPS from a test CA that only the broker trusts. Nothing leaves
loopback."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentvisor.testing.model_server import ModelServer
from agentvisor.testing.tls import Authority, make_test_ca
from tests.conftest import ServerProcess
from tests.helpers import wait_until
from tests.integration.test_dashboard import browser, free_port

__all__ = ["browser"]  # the fixture, shared with the dashboard's tests

REAL_KEY = "sk-ant-api03-real-host-key-never-in-a-sandbox-0123456789"
MARGIN_S = 60.0


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
def ca(short_tmp: Path) -> Authority:
    return make_test_ca(short_tmp / "ca")


def broker_server(
    short_tmp: Path, ca: Authority, model: ModelServer, env: dict[str, str] | None = None
) -> ServerProcess:
    home = short_tmp / "home"
    home.mkdir(exist_ok=True)
    offset = short_tmp / "clock-offset"
    offset.write_text("0")
    server = ServerProcess(
        short_tmp / "state",
        env={
            "HOME": str(home),
            "AGENTVISOR_MODEL_UPSTREAM": model.url,
            "AGENTVISOR_MODEL_UPSTREAM_CA": str(ca.ca_cert),
            "AGENTVISOR_CLOCK_OFFSET_FILE": str(offset),
            "AGENTVISOR_USAGE_LIMIT_MARGIN_S": str(MARGIN_S),
            "AGENTVISOR_SCHEDULER_MAX_SLEEP_S": "0.5",
            **(env or {}),
        },
    )
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        if name not in (env or {}):
            server.env.pop(name, None)
    return server.start()


def model_http(server: ServerProcess) -> httpx.Client:
    """What Claude Code in a sandbox reaches through the shim's relay: the API socket."""
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(server.socket_path)),
        base_url="http://agentvisor",
        timeout=30,
    )


def ask(http: httpx.Client, token: str, text: str, stream: bool = True) -> httpx.Response:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "stream": stream,
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": text}],
    }
    return http.post(
        "/model/v1/messages",
        json=body,
        headers={"x-api-key": token, "anthropic-version": "2023-06-01"},
    )


def reported_usage(response: httpx.Response) -> dict[str, int]:
    """What the scripted model reported, read from the answer as the agent got it."""
    usage: dict[str, int] = {}
    if response.headers["content-type"].startswith("text/event-stream"):
        for line in response.text.splitlines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if event["type"] == "message_start":
                usage.update(event["message"]["usage"])
            elif event["type"] == "message_delta":
                usage.update(event["usage"])
    else:
        usage.update(response.json()["usage"])
    return usage


def agent_row(server: ServerProcess, role: str) -> dict[str, Any]:
    return next(a for a in server.client.get("/v1/agents") if a["role"] == role)


def test_the_broker_swaps_the_stand_in_for_the_host_key_and_counts_what_the_model_reported(
    short_tmp: Path, ca: Authority
):
    steps = [
        {"when": "FIRST", "text": "A streamed answer, long enough to come in pieces." * 3},
        {"when": "SECOND", "text": "A plain answer."},
    ]
    with ModelServer(steps, tls=ca.server_context()) as model:
        server = broker_server(short_tmp, ca, model, {"ANTHROPIC_API_KEY": REAL_KEY})
        try:
            token = server.register_agent("demo", "developer")
            with model_http(server) as http:
                first = ask(http, token, "FIRST question")
                second = ask(http, token, "SECOND question", stream=False)
                assert first.status_code == 200 and second.status_code == 200
                assert first.headers["content-type"].startswith("text/event-stream")
                assert "long enough" in first.text
                # Neither the real key nor the stand-in came back.
                for answer in (first, second):
                    for value in answer.headers.values():
                        assert REAL_KEY not in value and token not in value
                # The model saw the host's key, never the agent's token.
                seen = {r["credential_sha256"] for r in model.requests}
                assert seen == {sha(REAL_KEY)}
                assert all(token not in json.dumps(r) for r in model.requests)

                # A wrong stand-in, the operator's token, a path outside the Messages API.
                assert ask(http, "avt_nope", "x").status_code == 401
                assert ask(http, server.operator_token, "x").status_code == 403
                admin = http.get("/model/v1/organizations/me", headers={"x-api-key": token})
                assert admin.status_code == 404
                assert len(model.requests) == 2

            want = [reported_usage(first), reported_usage(second)]
            usage = wait_until(
                lambda: next(
                    (
                        a
                        for a in server.client.get("/v1/usage", project="demo")["agents"]
                        if a["role"] == "developer" and a["requests"] == 2
                    ),
                    None,
                ),
                timeout_s=10,
            )
            for field in ("input_tokens", "output_tokens"):
                assert usage[field] == sum(w[field] for w in want)
            assert usage["cache_read_tokens"] == sum(w["cache_read_input_tokens"] for w in want)
            assert usage["tokens"] == sum(
                w["input_tokens"]
                + w["output_tokens"]
                + w["cache_creation_input_tokens"]
                + w["cache_read_input_tokens"]
                for w in want
            )
            with model_http(server) as http:
                metrics = http.get("/metrics").text
            who = 'project="demo",role="developer"'
            assert f'agentvisor_model_requests_total{{{who},status="2xx"}} 2' in metrics
            # prometheus_client writes label names in sorted order.
            assert f'agentvisor_model_tokens_total{{kind="output",{who}}}' in metrics
        finally:
            server.kill()


def test_a_429_with_a_reset_time_pauses_the_agent_until_then_and_it_resumes_once(
    short_tmp: Path, ca: Authority
):
    resets_at = int(time.time()) + 3600
    steps = [{"when": "LIMIT", "usage_limit": True, "resets_at": resets_at}] * 2
    with ModelServer(steps, tls=ca.server_context()) as model:
        server = broker_server(short_tmp, ca, model, {"ANTHROPIC_API_KEY": REAL_KEY})
        try:
            server.register_agent("demo", "orchestrator")
            token = server.register_agent("demo", "developer")
            dev = server.client_for(token)
            with model_http(server) as http:
                answer = ask(http, token, "LIMIT now")
                assert answer.status_code == 429
                assert answer.headers["anthropic-ratelimit-unified-reset"] == str(resets_at)
                ask(http, token, "LIMIT again")  # Claude Code retries: still one pause
            agent = agent_row(server, "developer")
            assert agent["state"] == "paused"
            assert agent["paused_until"] == pytest.approx(resets_at + MARGIN_S, abs=1)
            resumes = [
                c for c in server.client.get("/v1/checkins") if c["recipient_id"] == agent["id"]
            ]
            assert len(resumes) == 1
            notices = server.client.get("/v1/messages", recipient="orchestrator")
            assert any("usage limit" in m["body"] for m in notices)
            usage = server.client.get("/v1/usage", project="demo")["agents"]
            (row,) = [a for a in usage if a["role"] == "developer"]
            assert row["rate_limited"] == 2 and row["last_reset_at"] == resets_at
            assert dev.post("/v1/inbox/lease", wait_s=0.2) is None  # held while paused

            (short_tmp / "clock-offset").write_text(str(resets_at - time.time() + MARGIN_S + 1))
            first = wait_until(lambda: dev.post("/v1/inbox/lease", wait_s=1), timeout_s=20)
            assert "usage limit has reset" in first["message"]["body"]
            dev.post(f"/v1/inbox/{first['message']['id']}/ack", {"lease_id": first["lease_id"]})
            assert dev.post("/v1/inbox/lease", wait_s=1) is None  # resumed once
        finally:
            server.kill()


def test_a_token_budget_reached_pauses_the_agent_and_tells_the_orchestrator(
    short_tmp: Path, ca: Authority
):
    with ModelServer([], tls=ca.server_context()) as model:
        server = broker_server(short_tmp, ca, model, {"ANTHROPIC_API_KEY": REAL_KEY})
        try:
            server.register_agent("demo", "orchestrator")
            token = server.register_agent("demo", "developer")
            server.client.post("/v1/budget", {"project": "demo", "agent_tokens_per_day": 1})
            with model_http(server) as http:
                assert ask(http, token, "spend it").status_code == 200
                wait_until(
                    lambda: sum(
                        a["requests"]
                        for a in server.client.get("/v1/usage", project="demo")["agents"]
                    ),
                    timeout_s=10,
                )
                refused = ask(http, token, "and more")
                assert refused.status_code == 429
                error = refused.json()["error"]
                assert error["type"] == "rate_limit_error"
                assert "agentvisor budget demo --agent-tokens-per-day" in error["message"]
            assert len(model.requests) == 1  # the refused request never reached the model
            agent = agent_row(server, "developer")
            assert agent["state"] == "paused" and agent["paused_reason"].startswith("budget")
            notices = server.client.get("/v1/messages", recipient="orchestrator")
            assert any("Budget reached" in m["body"] for m in notices)
            events = [e["kind"] for e in server.client.get("/v1/events", project="demo")]
            assert "model.budget_reached" in events

            report = server.client.post(
                "/v1/budget", {"project": "demo", "agent_tokens_per_day": 1_000_000}
            )
            (row,) = [a for a in report["agents"] if a["role"] == "developer"]
            assert row["paused_reason"] is None
            with model_http(server) as http:
                assert ask(http, token, "again").status_code == 200
        finally:
            server.kill()


def test_the_hosts_login_file_readable_only_by_root_is_used_by_the_broker(
    short_tmp: Path, ca: Authority
):
    access = "sk-ant-oat01-host-login-access-token"
    with ModelServer([], tls=ca.server_context()) as model:
        login = short_tmp / "home" / ".claude" / ".credentials.json"
        login.parent.mkdir(parents=True)
        login.write_text(
            json.dumps(
                {
                    "claudeAiOauth": {
                        "accessToken": access,
                        "refreshToken": "sk-ant-ort01-refresh",
                        "expiresAt": int((time.time() + 3600) * 1000),
                    }
                }
            )
        )
        login.chmod(0o600)
        server = broker_server(short_tmp, ca, model)
        try:
            token = server.register_agent("demo", "developer")
            with model_http(server) as http:
                assert ask(http, token, "hello").status_code == 200
                (seen,) = model.requests
                assert seen["credential_sha256"] == sha(access)
                assert "oauth-2025-04-20" in seen["headers"]["anthropic-beta"]
                # Claude Code on the host refreshed its login: the broker reads the new one.
                fresh = "sk-ant-oat01-refreshed-on-the-host"
                data = json.loads(login.read_text())
                data["claudeAiOauth"]["accessToken"] = fresh
                login.write_text(json.dumps(data))
                assert ask(http, token, "again").status_code == 200
                assert model.requests[-1]["credential_sha256"] == sha(fresh)
        finally:
            server.kill()


def test_the_dashboard_shows_each_agents_usage_its_chart_and_why_it_is_paused(
    short_tmp: Path, ca: Authority, browser: Any
):
    from playwright.sync_api import expect

    port = free_port()
    with ModelServer([], tls=ca.server_context()) as model:
        server = broker_server(
            short_tmp,
            ca,
            model,
            {"ANTHROPIC_API_KEY": REAL_KEY, "AGENTVISOR_TCP_PORT": str(port)},
        )
        try:
            server.register_agent("demo", "orchestrator")
            dev = server.register_agent("demo", "developer")
            tester = server.register_agent("demo", "tester")
            server.client.post("/v1/budget", {"project": "demo", "agent_tokens_per_day": 1})
            with model_http(server) as http:
                assert ask(http, tester, "a question").status_code == 200
                assert ask(http, dev, "a question").status_code == 200
                wait_until(
                    lambda: (
                        sum(
                            a["requests"]
                            for a in server.client.get("/v1/usage", project="demo")["agents"]
                        )
                        == 2
                    ),
                    timeout_s=10,
                )
                assert ask(http, dev, "over budget").status_code == 429
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
                state = http.get("/v1/dashboard/state").json()
            usage = {a["role"]: a for a in state["usage"]["agents"]}
            assert usage["developer"]["requests"] == 1 and usage["developer"]["tokens"] > 0
            assert usage["developer"]["paused_reason"].startswith("budget")
            assert {p["role"] for p in state["usage"]["chart"]["points"]} == {
                "developer",
                "tester",
            }

            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.locator('#usage-chart polyline[data-role="developer"]')).to_have_count(1)
            expect(page.locator('#usage-chart polyline[data-role="tester"]')).to_have_count(1)
            expect(page.locator("#usage tbody")).to_contain_text("agentvisor budget demo")
            expect(page.locator("#usage-budget")).to_contain_text("1 tokens per agent per day")
            page.close()
            assert not errors
        finally:
            server.kill()


def test_usage_and_budget_commands_show_and_change_what_the_api_holds(
    short_tmp: Path, ca: Authority
):
    from typer.testing import CliRunner

    from agentvisor import cli

    with ModelServer([], tls=ca.server_context()) as model:
        server = broker_server(short_tmp, ca, model, {"ANTHROPIC_API_KEY": REAL_KEY})
        try:
            token = server.register_agent("demo", "developer")
            with model_http(server) as http:
                assert ask(http, token, "count me").status_code == 200
            wait_until(
                lambda: server.client.get("/v1/usage", project="demo")["agents"][0]["requests"],
                timeout_s=10,
            )
            runner = CliRunner()
            state = ["--state", str(server.state_dir)]
            shown = runner.invoke(cli.app, [*state, "usage", "demo", "--json"])
            assert shown.exit_code == 0, shown.output
            (row,) = json.loads(shown.output)["agents"]
            assert row["role"] == "developer" and row["requests"] == 1 and row["tokens"] > 0
            changed = runner.invoke(
                cli.app,
                [*state, "budget", "demo", "--project-tokens", "1000", "--project-hours", "2"],
            )
            assert changed.exit_code == 0, changed.output
            assert "1000 tokens for the project" in changed.output
            budget = server.client.get("/v1/usage", project="demo")["budget"]
            assert budget == {
                "agent_tokens_per_day": 0,
                "project_tokens": 1000,
                "project_hours": 2.0,
            }
            table = runner.invoke(cli.app, [*state, "usage"])
            assert table.exit_code == 0 and "developer" in table.output
        finally:
            server.kill()
