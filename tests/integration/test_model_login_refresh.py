"""The broker keeps the host's Claude Code login fresh: a real `agentvisor serve` refreshes a
login that is about to expire (or that the upstream refused) at a token endpoint this test
serves on loopback, writes the rotated tokens back into the login file of a temporary HOME,
and forwards with the new access token to the scripted model server."""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentvisor.testing.model_server import ModelServer
from agentvisor.testing.tls import Authority, make_test_ca
from tests.conftest import ServerProcess
from tests.integration.test_model_broker_api import ask, broker_server, model_http, sha

OLD_ACCESS = "sk-ant-oat01-old-access-token"
OLD_REFRESH = "sk-ant-ort01-old-refresh-token"
NEW_ACCESS = "sk-ant-oat01-refreshed-by-the-broker"
NEW_REFRESH = "sk-ant-ort01-rotated-refresh-token"
CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"


class TokenEndpoint:
    """A stand-in for Claude Code's OAuth token endpoint: answers each refresh with `answer`
    (status, JSON) after `delay_s`, and records what it was sent."""

    def __init__(self, answer: tuple[int, dict[str, Any]], delay_s: float = 0.0) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.calls: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint.calls.append({"path": self.path, "body": json.loads(raw)})
                time.sleep(endpoint.delay_s)
                status, payload = endpoint.answer
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/oauth/token"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


GRANTED = (
    200,
    {
        "access_token": NEW_ACCESS,
        "refresh_token": NEW_REFRESH,
        "expires_in": 28800,
        "scope": "user:inference user:profile",
        "token_type": "Bearer",
    },
)


@pytest.fixture
def ca(short_tmp: Path) -> Authority:
    return make_test_ca(short_tmp / "ca")


def write_login(short_tmp: Path, expires_in_s: float, mode: int = 0o600) -> Path:
    login = short_tmp / "home" / ".claude" / ".credentials.json"
    login.parent.mkdir(parents=True, exist_ok=True)
    login.write_text(
        json.dumps(
            {
                "claudeAiOauth": {
                    "accessToken": OLD_ACCESS,
                    "refreshToken": OLD_REFRESH,
                    "expiresAt": int((time.time() + expires_in_s) * 1000),
                    "scopes": ["user:inference", "user:profile"],
                    "subscriptionType": "max",
                },
                "mcpOAuth": {"kept": "as it was"},
            }
        )
    )
    login.chmod(mode)
    return login


@pytest.fixture
def endpoint() -> Iterator[TokenEndpoint]:
    server = TokenEndpoint(GRANTED, delay_s=0.5)
    yield server
    server.stop()


def serve(short_tmp: Path, ca: Authority, model: ModelServer, token_url: str) -> ServerProcess:
    return broker_server(short_tmp, ca, model, {"AGENTVISOR_CLAUDE_OAUTH_TOKEN_URL": token_url})


def test_a_login_about_to_expire_is_refreshed_once_for_concurrent_requests_and_written_back(
    short_tmp: Path, ca: Authority, endpoint: TokenEndpoint
):
    login = write_login(short_tmp, expires_in_s=60)  # inside the 5-minute margin
    with ModelServer([], tls=ca.server_context()) as model:
        server = serve(short_tmp, ca, model, endpoint.url)
        try:
            token = server.register_agent("demo", "developer")
            statuses: list[int] = []

            def one() -> None:
                with model_http(server) as http:
                    statuses.append(ask(http, token, "hello").status_code)

            threads = [threading.Thread(target=one) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert statuses == [200] * 6

            (call,) = endpoint.calls  # one refresh for all six
            assert call["body"] == {
                "grant_type": "refresh_token",
                "refresh_token": OLD_REFRESH,
                "client_id": CLIENT_ID,
                "scope": "user:inference user:profile",
            }
            assert {r["credential_sha256"] for r in model.requests} == {sha(NEW_ACCESS)}

            # The host's own Claude Code goes on with the rotated refresh token.
            assert stat.S_IMODE(login.stat().st_mode) == 0o600
            data = json.loads(login.read_text())
            oauth = data["claudeAiOauth"]
            assert oauth["accessToken"] == NEW_ACCESS
            assert oauth["refreshToken"] == NEW_REFRESH
            assert oauth["expiresAt"] / 1000 == pytest.approx(time.time() + 28800, abs=60)
            assert oauth["subscriptionType"] == "max"
            assert data["mcpOAuth"] == {"kept": "as it was"}
            assert not [p for p in login.parent.iterdir() if p.name != login.name]

            events = [e["kind"] for e in server.client.get("/v1/events")]
            assert "model.login_refreshed" in events
            with model_http(server) as http:  # fresh now: no second refresh
                assert ask(http, token, "again").status_code == 200
            assert len(endpoint.calls) == 1
        finally:
            server.kill()


def test_a_401_from_the_upstream_refreshes_the_login_once_and_retries(
    short_tmp: Path, ca: Authority, endpoint: TokenEndpoint
):
    login = write_login(short_tmp, expires_in_s=3600, mode=0o640)  # not due for a refresh
    with ModelServer([], tls=ca.server_context()) as model:
        model.revoked.add(sha(OLD_ACCESS))
        server = serve(short_tmp, ca, model, endpoint.url)
        try:
            token = server.register_agent("demo", "developer")
            with model_http(server) as http:
                answer = ask(http, token, "hello")
            assert answer.status_code == 200
            assert [r["credential_sha256"] for r in model.requests] == [
                sha(OLD_ACCESS),
                sha(NEW_ACCESS),
            ]
            assert len(endpoint.calls) == 1
            assert stat.S_IMODE(login.stat().st_mode) == 0o640

            # A login the upstream refuses even fresh: one refresh, one retry, then the 401.
            model.revoked.add(sha(NEW_ACCESS))
            endpoint.answer = (200, {**GRANTED[1], "access_token": "sk-ant-oat01-third"})
            model.revoked.add(sha("sk-ant-oat01-third"))
            with model_http(server) as http:
                assert ask(http, token, "again").status_code == 401
            assert len(endpoint.calls) == 2
        finally:
            server.kill()


def test_a_refresh_the_endpoint_refuses_fails_the_request_at_once_and_says_how_to_fix_it(
    short_tmp: Path, ca: Authority
):
    refused = TokenEndpoint(
        (400, {"error": "invalid_grant", "error_description": "Refresh token not found"})
    )
    write_login(short_tmp, expires_in_s=-10)  # expired
    try:
        with ModelServer([], tls=ca.server_context()) as model:
            server = serve(short_tmp, ca, model, refused.url)
            try:
                token = server.register_agent("demo", "developer")
                with model_http(server) as http:
                    started = time.monotonic()
                    answer = ask(http, token, "hello")
                    assert time.monotonic() - started < 10
                    assert answer.status_code == 503
                    message = answer.json()["error"]["message"]
                    assert "invalid_grant" in message and "claude /login" in message
                    # Retried at once: the same answer, without asking the endpoint again.
                    assert ask(http, token, "again").status_code == 503
                assert len(refused.calls) == 1
                assert model.requests == []
                health = server.client.get("/v1/health")
                assert health["ok"] is False and "claude /login" in health["model_login"]
                events = server.client.get("/v1/events")
                (failed,) = [e for e in events if e["kind"] == "model.login_refresh_failed"]
                assert "invalid_grant" in json.dumps(failed)
                assert OLD_REFRESH not in json.dumps(events)
            finally:
                server.kill()
    finally:
        refused.stop()
