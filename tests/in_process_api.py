"""The real host API app (build_app: store, service, scheduler, queue, watchdog) served in this
process over httpx's ASGITransport: what most API tests need, without a server process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import anyio.from_thread
import httpx
from fastapi import FastAPI

from agentvisor.client import ApiClient
from agentvisor.config import Settings, load_settings
from agentvisor.server.server import build_app
from agentvisor.server.service import Service
from tests.api_host import ApiHost


class PortalTransport(httpx.BaseTransport):
    """A synchronous httpx transport that runs each request on the app's own event loop (the
    one its lifespan started on), so long polls and their wake-ups meet as in the server."""

    def __init__(self, app: FastAPI, portal: anyio.from_thread.BlockingPortal) -> None:
        # Unhandled errors become 500s, as a real server answers them, not test exceptions.
        self._asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()  # a sync client's stream; ASGITransport wants bytes it can await
        replayable = httpx.Request(
            request.method, request.url, headers=request.headers, content=body
        )

        async def send() -> httpx.Response:
            response = await self._asgi.handle_async_request(replayable)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return self._portal.call(send)


class InProcessServer(ApiHost):
    """The same app `agentvisor serve` runs, on its own state directory, in this process: the
    interface of tests.conftest.ServerProcess where it means the same (clients, a project, an
    agent). What only a process has (the socket, peer credentials, restarts) is not here."""

    def __init__(self, state_dir: Path, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.settings: Settings = load_settings(state_dir, env=dict(env or {}))
        super().__init__()
        self._stack = contextlib.ExitStack()
        self.app: FastAPI | None = None
        self.service: Service | None = None
        self._transport: PortalTransport | None = None

    @property
    def operator_token(self) -> str:
        return self.settings.operator_token_path.read_text(encoding="utf-8").strip()

    def start(self) -> InProcessServer:
        self.app, self.service = build_app(self.settings)
        portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
        self._stack.enter_context(
            portal.wrap_async_context_manager(self.app.router.lifespan_context(self.app))
        )
        self._transport = PortalTransport(self.app, portal)
        return self

    def stop(self) -> None:
        self.close_clients()
        self._stack.close()  # the lifespan's end: scheduler, queue and watchdog stop
        if self.service is not None:
            self.service.store.close()

    def http(self, token: str | None = None) -> httpx.Client:
        """A plain httpx client of the app, with `token` as its bearer token if given: for
        requests ApiClient would not send."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            transport=self._transport, base_url="http://agentvisor", headers=headers
        )

    def new_client(self, token: str | None) -> ApiClient:
        return ApiClient(self.settings, token=token, transport=self._transport)


@contextlib.contextmanager
def in_process_server(
    state_dir: Path, env: dict[str, str] | None = None
) -> Iterator[InProcessServer]:
    server = InProcessServer(state_dir, env).start()
    try:
        yield server
    finally:
        server.stop()
