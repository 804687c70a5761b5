"""The egress proxy in a real server, reached the way a sandbox reaches it (the shim's relay
from a loopback port to `STATE/sock/egress.sock`), with curl as the client. Every upstream is
a server this test starts on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from agent_shim.channel import Relay
from agentvisor.cli import app as cli_app
from agentvisor.cli.render import visible
from tests.conftest import ServerProcess
from tests.helpers import wait_until


class _Site(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = b"got " + self.rfile.read(length)
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Proxy:
    server: ServerProcess
    port: int  # the relay's loopback port, as 7398 in a sandbox
    site: int  # an allowed test site's port
    other: int  # a second site, never listed
    token: str

    def url(self, token: str | None = None) -> str:
        return f"http://agent:{token or self.token}@127.0.0.1:{self.port}"

    def curl(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["curl", "-sS", "--max-time", "10", "-x", self.url(token), "-w", "\n%{http_code}",
             *args],
            capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip


def _site() -> tuple[http.server.ThreadingHTTPServer, int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[Proxy]:
    token = server.register_agent("demo", "developer")
    site, site_port = _site()
    other, other_port = _site()
    relay = Relay(str(server.settings.egress_socket_path), 0, name="egress")
    relay.start()
    port = relay.wait_bound(5.0)
    assert port
    server.client.post("/v1/egress/rules", {"project": "demo", "entry": f"127.0.0.1:{site_port}"})
    try:
        yield Proxy(server, port, site_port, other_port, token)
    finally:
        relay.stop()
        site.shutdown()
        other.shutdown()


def _status(result: subprocess.CompletedProcess[str]) -> tuple[int, str]:
    body, _, code = result.stdout.rpartition("\n")
    return int(code or 0), body.rstrip("\n")


def _requests(proxy: Proxy, **params: object) -> list[dict]:
    return proxy.server.client.get("/v1/egress/requests", project="demo", **params)


def test_a_listed_site_answers_through_the_proxy_and_the_request_is_recorded(proxy: Proxy):
    code, body = _status(proxy.curl(f"http://127.0.0.1:{proxy.site}/a?b=1"))
    assert (code, body) == (200, "hello from /a?b=1")
    code, body = _status(proxy.curl("-d", "payload", f"http://127.0.0.1:{proxy.site}/p"))
    assert (code, body) == (201, "got payload")
    wait_until(lambda: len(_requests(proxy)) >= 2, timeout_s=5, message="two events")
    event = _requests(proxy)[-1]["data"]
    assert event["allowed"] is True and event["host"] == "127.0.0.1"
    assert event["port"] == proxy.site and event["method"] == "GET" and event["role"] == "developer"
    assert event["bytes_down"] > len("hello from /a?b=1") and event["bytes_up"] > 0
    panel = proxy.server.client.get("/v1/dashboard/state", project="demo")["egress"]
    assert panel[0]["host"] == "127.0.0.1" and panel[0]["allowed"] is True


def test_connect_to_a_listed_port_is_a_tunnel(proxy: Proxy):
    code, body = _status(proxy.curl("-p", f"http://127.0.0.1:{proxy.site}/tunnelled"))
    assert (code, body) == (200, "hello from /tunnelled")
    wait_until(lambda: _requests(proxy), timeout_s=5, message="an event")
    assert _requests(proxy)[0]["data"]["method"] == "CONNECT"


@pytest.mark.parametrize(
    "target",
    ["http://127.0.0.1:{other}/", "http://localhost:{site}/", "http://[::1]:{site}/",
     "http://denied.invalid/", "http://127.0.0.2:{site}/"],
)  # fmt: skip
def test_what_is_not_listed_exactly_is_refused_with_the_command_that_allows_it(
    proxy: Proxy, target: str
):
    url = target.format(site=proxy.site, other=proxy.other)
    for extra in ((), ("-p",)):
        result = proxy.curl(*extra, url)
        if extra:  # curl reports the refused CONNECT itself
            assert "403" in result.stderr, result.stderr
            continue
        code, body = _status(result)
        assert code == 403, body
        assert "agentvisor egress allow demo " in body
    wait_until(lambda: len(_requests(proxy, denied=True)) == 2, timeout_s=5, message="2 events")
    assert all(not e["data"]["allowed"] for e in _requests(proxy))


def test_a_name_that_resolves_to_loopback_needs_an_exact_entry(proxy: Proxy):
    # `localhost` alone allows ports 80 and 443, but not of a loopback address: no connection
    # is even tried (nothing listens on 80 here; an attempt would be a 502).
    proxy.server.client.post("/v1/egress/rules", {"project": "demo", "entry": "localhost"})
    code, body = _status(proxy.curl("http://localhost/"))
    assert code == 403 and "non-public" in body
    entry = f"localhost:{proxy.site}"
    proxy.server.client.post("/v1/egress/rules", {"project": "demo", "entry": entry})
    assert _status(proxy.curl(f"http://localhost:{proxy.site}/x"))[0] == 200


def test_no_token_or_a_wrong_one_gets_407(proxy: Proxy):
    code, _ = _status(proxy.curl(f"http://127.0.0.1:{proxy.site}/", token="avt_wrong"))
    assert code == 407
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    raw.sendall(f"GET http://127.0.0.1:{proxy.site}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert raw.recv(100).startswith(b"HTTP/1.1 407")
    raw.close()


def test_a_denied_entry_is_refused_again(proxy: Proxy):
    entry = f"127.0.0.1:{proxy.site}"
    proxy.server.client.request("DELETE", "/v1/egress/rules", params={"project": "demo",
                                                                      "entry": entry})  # fmt: skip
    assert _status(proxy.curl(f"http://127.0.0.1:{proxy.site}/"))[0] == 403


def test_the_cli_changes_the_allowlist_and_shows_every_attempt(proxy: Proxy):
    state = str(proxy.server.state_dir)

    def cli(*args: str) -> str:
        result = CliRunner().invoke(cli_app, ["--state", state, "egress", *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert "pypi allowed" in cli("allow", "demo", "pypi")
    listed = json.loads(cli("list", "demo", "--json"))
    assert {"entry": "pypi", "origin": "operator"} in listed
    cli("deny", "demo", "pypi")
    assert _status(proxy.curl(f"http://127.0.0.1:{proxy.other}/"))[0] == 403
    assert _status(proxy.curl(f"http://127.0.0.1:{proxy.site}/"))[0] == 200
    wait_until(lambda: len(_requests(proxy)) == 2, timeout_s=5, message="two events")
    denied = json.loads(cli("demo", "--denied", "--json"))
    assert [r["data"]["port"] for r in denied] == [proxy.other]
    table = cli("demo")
    assert "developer" in table and "denied" in table and "allowed" in table
    bad = CliRunner().invoke(cli_app, ["--state", state, "egress", "allow", "demo", "a b"])
    assert bad.exit_code != 0


def test_agent_strings_are_shown_with_control_characters_visible():
    # Control and bidi characters made visible; "[/b]" stays as it is, since the CLI's console
    # interprets no markup at all (agentvisor.cli.render SafeConsole).
    assert visible("\x1b[31mred\u202e[/b]") == "\\x1b[31mred\\u202e[/b]"
