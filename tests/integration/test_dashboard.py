"""The web dashboard: its JSON snapshot and access rules against a real server process, its pane
stream against a scripted pane, and the page itself in a real headless Chromium with a running
demo team (orchestrator + developer) in real sandboxes."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agentvisor import launch
from agentvisor.client import ApiClient
from agentvisor.config import Settings, load_settings
from agentvisor.core.sandbox_status import SandboxInfo, SandboxStats
from agentvisor.errors import AgentvisorError, SandboxError
from agentvisor.server.auth import Authenticator
from agentvisor.server.dashboard.routes import dashboard_router
from agentvisor.server.inbox_waiters import InboxWaiters
from agentvisor.server.metrics import Metrics
from agentvisor.server.service import Service
from agentvisor.store.database import Store
from tests.conftest import REPO, ServerProcess, require
from tests.helpers import docker_answers, make_repo, sandbox_test_image, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = REPO / "test-output"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) for each server-sent event with data; comments are skipped."""
    event, data = "message", list[str]()
    for line in response.iter_lines():
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data.append(line.partition(":")[2].strip())


# --- a real server, no Docker needed -------------------------------------------------------------


@pytest.fixture
def tcp_server(short_tmp: Path) -> Iterator[ServerProcess]:
    port = free_port()
    proc = ServerProcess(short_tmp / "state", env={"AGENTVISOR_TCP_PORT": str(port)}).start()
    yield proc
    proc.kill()


def loopback(server: ServerProcess, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    port = server.env["AGENTVISOR_TCP_PORT"]
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10)


def unix(server: ServerProcess, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.HTTPTransport(uds=str(server.socket_path))
    return httpx.Client(transport=transport, base_url="http://agentvisor", headers=headers)


def test_state_snapshot_shows_agents_queues_checkins_and_events(tcp_server: ServerProcess):
    tcp_server.register_agent("demo", "orchestrator")
    developer = tcp_server.client_for(tcp_server.register_agent("demo", "developer"))
    developer.post("/v1/heartbeat", {"state": "working"})
    operator = tcp_server.client
    sent = operator.post("/v1/messages", {"project": "demo", "to": "developer", "body": "hi"})
    checkin = operator.post(
        "/v1/checkins", {"project": "demo", "to": "orchestrator", "minutes": 30, "note": "look"}
    )
    with loopback(tcp_server) as http:
        page = http.get("/")
        assert page.status_code == 200 and "<title>agentvisor</title>" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert http.get("/static/dashboard.js").status_code == 200
        assert http.get("/static/dashboard.css").status_code == 200
        state = http.get("/v1/dashboard/state").json()
    assert set(state) >= {
        "now",
        "projects",
        "queue",
        "project",
        "agents",
        "messages",
        "checkins",
        "events",
        "sandboxes",
        "pane_streams",
    }
    assert [p["name"] for p in state["projects"]] == ["demo"]
    assert state["projects"][0]["pending"] == 1 and state["projects"][0]["checkins_pending"] == 1
    assert state["project"]["name"] == "demo"
    agents = {a["role"]: a for a in state["agents"]}
    assert agents["developer"]["state"] == "working"
    assert agents["developer"]["queued"] == 1
    assert agents["orchestrator"]["state"] == "starting"  # registered, no heartbeat yet
    assert agents["orchestrator"]["next_checkin_at"] == pytest.approx(checkin["due_at"])
    for key in ("last_activity_at", "cpu_percent", "memory_mb", "sandbox", "paused_until"):
        assert key in agents["developer"]
    message = state["messages"][0]
    assert (message["id"], message["recipient"], message["state"]) == (
        sent["id"],
        "developer",
        "queued",
    )
    assert state["checkins"][0]["id"] == checkin["id"]
    assert state["checkins"][0]["recipient"] == "orchestrator"
    kinds = [e["kind"] for e in state["events"]]
    assert "agent.registered" in kinds and "server.started" in kinds


def test_reads_without_a_token_only_on_loopback_and_forms_need_the_operator_token(
    tcp_server: ServerProcess,
):
    agent_token = tcp_server.register_agent("demo", "developer")
    with loopback(tcp_server) as http:
        # The page's forms call the host API: refused without a token.
        send = http.post("/v1/messages", json={"project": "demo", "to": "developer", "body": "x"})
        assert send.status_code == 401
        schedule = http.post(
            "/v1/checkins", json={"project": "demo", "to": "developer", "minutes": 5, "note": "x"}
        )
        assert schedule.status_code == 401
        # A web page that rebinds its own name to 127.0.0.1 is not a loopback reader.
        rebound = http.get(
            "/v1/dashboard/state", headers={"Host": f"evil.example:{http.base_url.port}"}
        )
        assert rebound.status_code == 401
    with loopback(tcp_server, token="wrong") as http:
        assert http.get("/v1/dashboard/state").status_code == 401
    with loopback(tcp_server, token=agent_token) as http:
        assert http.get("/v1/dashboard/state").status_code == 403
    # The Unix socket, which every sandbox mounts, needs the operator token even to read.
    with unix(tcp_server) as http:
        assert http.get("/v1/dashboard/state").status_code == 401
        assert http.get("/v1/dashboard/pane/demo/developer/stream").status_code == 401
    with unix(tcp_server, agent_token) as http:
        assert http.get("/v1/dashboard/state").status_code == 403
    with unix(tcp_server, tcp_server.operator_token) as http:
        assert http.get("/v1/dashboard/state").json()["project"]["name"] == "demo"
    with loopback(tcp_server, tcp_server.operator_token) as http:
        sent = http.post("/v1/messages", json={"project": "demo", "to": "developer", "body": "x"})
        assert sent.status_code == 201


def test_pane_stream_of_a_missing_sandbox_says_why_and_ends_with_its_client(
    tcp_server: ServerProcess,
):
    tcp_server.register_agent("demo", "developer")
    with loopback(tcp_server) as http:
        assert http.get("/v1/dashboard/pane/demo/nobody/stream").status_code == 404
        assert http.get("/v1/dashboard/pane/nope/developer/stream").status_code == 404
        with http.stream("GET", "/v1/dashboard/pane/demo/developer/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)  # kept: closing it would close the connection
            event, data = next(events)
            # No sandbox (or no Docker): the reason, from the backend, in place of the text.
            assert event == "pane" and data["text"] is None and data["error"]
            assert http.get("/v1/dashboard/state").json()["pane_streams"] == 1

        def streams() -> int:
            return int(http.get("/v1/dashboard/state").json()["pane_streams"])

        wait_until(lambda: streams() == 0, timeout_s=10, message="the stream to end")


# --- the pane stream against a scripted pane ---------------------------------------------------


class ScriptedPanes:
    """A stand-in for the sandbox backend: the pane shows whatever the test writes."""

    def __init__(self) -> None:
        self.text = "demo> "
        self.reads = 0

    def list(self, project: str | None = None) -> list[SandboxInfo]:
        return []

    def stats(
        self, project: str | None = None, role: str | None = None
    ) -> dict[tuple[str, str], SandboxStats]:
        raise SandboxError("Docker engine not reachable (scripted)")

    def pane_history(self, project: str, role: str, lines: int = 200) -> str:
        self.reads += 1
        return self.text


@pytest.fixture
def scripted(short_tmp: Path) -> Iterator[tuple[str, ScriptedPanes]]:
    settings = load_settings(short_tmp / "state", env={})
    store = Store(settings.db_path)
    service = Service(settings, store, None, InboxWaiters(), Metrics())
    project = store.upsert_project("demo", "/tmp/demo")
    store.register_agent(project["id"], "developer")
    panes = ScriptedPanes()
    app = FastAPI()

    @app.exception_handler(AgentvisorError)
    async def _domain_error(_: Request, exc: AgentvisorError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    auth = Authenticator(store, "operator-token")
    app.include_router(dashboard_router(service, auth, lambda: panes, pane_interval_s=0.05))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout_s=10, message="uvicorn to start")
    yield f"http://127.0.0.1:{port}", panes
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


def test_pane_stream_sends_the_text_only_when_it_changes_and_ends_with_its_client(scripted):
    base, panes = scripted
    with httpx.Client(base_url=base, timeout=10) as http:

        def state() -> dict[str, Any]:
            return dict(http.get("/v1/dashboard/state").json())

        with http.stream("GET", "/v1/dashboard/pane/demo/developer/stream") as response:
            events = sse_events(response)
            event, first = next(events)
            assert (event, first["text"], first["error"], first["role"]) == (
                "pane",
                "demo> ",
                None,
                "developer",
            )
            assert state()["pane_streams"] == 1
            panes.text = "demo> hello\nok: received av-1\ndemo> "
            # Polled every 0.05 s meanwhile: an unchanged pane sent nothing.
            event, changed = next(events)
            assert (event, changed["text"]) == ("pane", panes.text)
            assert changed["at"] >= first["at"]
        wait_until(lambda: state()["pane_streams"] == 0, timeout_s=10, message="the stream to end")
        # Docker being unreachable is shown on the page, not raised.
        unreachable = wait_until(
            lambda: state()["sandboxes"]["error"], timeout_s=10, message="the sampling error"
        )
        assert "not reachable" in unreachable
        assert state()["agents"][0]["cpu_percent"] is None


# --- the page in a real browser, with a running demo team ---------------------------------------

SPEC = """# Greeting library

Build a small Python library that formats friendly greetings for a list of names, with unit
tests and a short README. Keep it dependency free.
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    require(Path(CHROMIUM).is_file(), f"Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package (pip install -e '.[dev]')")
        raise
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def demo_team(short_tmp: Path) -> Iterator[tuple[Settings, str, ServerProcess]]:
    """A server on a loopback TCP port, and a demo team (orchestrator + developer) brought up
    by `launch.up` in real sandboxes."""
    require(docker_answers(), "a Docker engine")
    # A name of its own: container names are global, and other tests bring up "greet".
    repo = make_repo(short_tmp / f"dash-{uuid.uuid4().hex[:6]}", SPEC)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVISOR_")}
    env["AGENTVISOR_DEMO_IMAGE"] = sandbox_test_image()
    settings = load_settings(short_tmp / "state", env=env, memory_mb=512, tcp_port=port)
    server = ServerProcess(settings.state_dir, env={"AGENTVISOR_TCP_PORT": str(port)}).start()
    project = ""
    try:
        options = launch.UpOptions(
            spec=repo / "spec.md", roles=("orchestrator", "developer"), agent="demo", wait_s=90
        )
        report = launch.up(settings, options)
        project = report.project
        assert {a.briefing for a in report.agents} == {"delivered"}, report.agents
        yield settings, project, server
    finally:
        if project:
            from agentvisor.sandbox.sandboxes import SandboxBackend

            SandboxBackend(settings).remove(project, volumes=True)
        server.kill()


@pytest.mark.docker
@pytest.mark.slow
def test_dashboard_in_a_browser_follows_the_pane_and_sends_as_the_operator(
    demo_team: tuple[Settings, str, ServerProcess], browser: Any
):
    from playwright.sync_api import expect

    settings, project, server = demo_team
    base = f"http://127.0.0.1:{settings.tcp_port}"
    OUTPUT.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(f"{base}/")
        # The team is there, with its state; read-only: the forms are disabled.
        expect(page.locator("#project")).to_have_value(project)
        developer = page.locator('#agents tr[data-role="developer"]')
        expect(developer).to_be_visible()
        expect(page.locator('#agents tr[data-role="orchestrator"]')).to_be_visible()
        expect(developer.locator("td.state")).to_have_text(
            re.compile("working|idle"), timeout=60_000
        )
        expect(page.locator("#send-form textarea")).to_be_disabled()

        # The developer's pane, live: a message sent through the API shows up without reload.
        developer.click()
        expect(page.locator("#pane-role")).to_have_text("developer")
        pane = page.locator("#pane")
        expect(pane).to_contain_text("demo>", timeout=60_000)
        page.evaluate("window.__sameDocument = true")
        with ApiClient(settings) as client:
            sent = client.post(
                "/v1/messages",
                {
                    "project": project,
                    "to": "developer",
                    "body": f"from the API {uuid.uuid4().hex[:8]}",
                },
            )
        expect(pane).to_contain_text(sent["marker"], timeout=60_000)
        expect(pane).to_contain_text(sent["body"])
        assert page.evaluate("window.__sameDocument") is True  # updated in place, not reloaded

        # The operator unlocks the forms with the token and sends from the page.
        page.fill("#token", server.operator_token)
        page.click("#token-form button")
        expect(page.locator("#operator")).to_be_visible()
        form = page.locator("#send-form")
        expect(form.locator("textarea")).to_be_enabled()
        form.locator("select[name=to]").select_option("developer")
        text = f"from the page {uuid.uuid4().hex[:8]}"
        form.locator("textarea[name=body]").fill(text)
        form.locator("button[type=submit]").click()
        expect(form.locator(".result")).to_contain_text("Queued #")
        expect(pane).to_contain_text(text, timeout=60_000)
        row = page.locator("#messages tbody tr", has_text=text)
        expect(row.locator("td.state")).to_contain_text("delivered", timeout=60_000)
        assert row.get_attribute("data-marker") in pane.inner_text()

        # And a check-in scheduled from the page is listed as pending.
        checkin = page.locator("#checkin-form")
        checkin.locator("select[name=to]").select_option("developer")
        checkin.locator("input[name=minutes]").fill("45")
        checkin.locator("textarea[name=note]").fill("dashboard check-in")
        checkin.locator("button[type=submit]").click()
        expect(checkin.locator(".result")).to_contain_text("Check-in #")
        expect(page.locator("#checkins tbody tr", has_text="dashboard check-in")).to_contain_text(
            "pending"
        )
        expect(page.locator("#events li").first).to_be_visible()
        assert not console_errors, console_errors
    except BaseException:
        # What the page and the server saw, for the failure report.
        print("pane:", page.locator("#pane").inner_text())
        with httpx.Client(timeout=10) as http:
            print("state:", http.get(f"{base}/v1/dashboard/state").text[:8000])
        print("console errors:", console_errors)
        print("server log:", server.log_tail())
        raise
    finally:
        page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)
        page.close()
