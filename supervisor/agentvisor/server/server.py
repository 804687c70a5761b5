"""The agentvisor server process: the store, the scheduler thread and the host API on uvicorn,
served on the Unix socket in the state directory (and on loopback TCP only when asked)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import uvicorn
from fastapi import FastAPI

from agentvisor.clock import Clock, FileClock, SystemClock
from agentvisor.config import Settings
from agentvisor.errors import Conflict, ServerUnavailable
from agentvisor.sandbox.sandbox_sockets import SandboxListeners
from agentvisor.server import log_limit
from agentvisor.server.api.app import create_app
from agentvisor.server.api.connections import ConnectionGate, gated_protocol, raise_fd_limit
from agentvisor.server.api.limits import SandboxRequestLimit
from agentvisor.server.auth import Authenticator, ensure_operator_token
from agentvisor.server.egress.proxy import EgressProxy
from agentvisor.server.inbox_waiters import InboxWaiters
from agentvisor.server.metrics import Metrics
from agentvisor.server.project_queue import Launcher, QueueRunner, no_launcher
from agentvisor.server.scheduler import Scheduler
from agentvisor.server.server_control import read_pid
from agentvisor.server.service import Service
from agentvisor.server.watchdog import Watchdog
from agentvisor.store.database import Store

log = logging.getLogger("agentvisor.server")

BACKLOG = 1024  # connections waiting to be accepted, per socket


def make_clock(settings: Settings) -> Clock:
    return FileClock(settings.clock_offset_file) if settings.clock_offset_file else SystemClock()


def build_app(
    settings: Settings, clock: Clock | None = None, launcher: Launcher = no_launcher
) -> tuple[FastAPI, Service]:
    """Everything the server runs, wired together; the scheduler starts with the app. The queue
    brings its specs up with `launcher` (agentvisor.launch's, from the CLI's `serve`)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        os.chmod(settings.state_dir, 0o700)
    store = Store(settings.db_path, clock or make_clock(settings), settings.sqlite_synchronous)
    token = ensure_operator_token(settings.operator_token_path)
    waiters = InboxWaiters()
    metrics = Metrics()
    service = Service(settings, store, None, waiters, metrics)
    scheduler = Scheduler(store, service.notify_fired, max_sleep_s=settings.scheduler_max_sleep_s)
    service.scheduler = scheduler
    queue_runner = QueueRunner(settings, store, launcher)
    service.queue_runner = queue_runner
    watchdog = Watchdog(service)
    app = create_app(service, Authenticator(store, token))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        import asyncio

        waiters.bind(asyncio.get_running_loop())
        scheduler.start()
        queue_runner.start()
        watchdog.start()
        egress = await start_egress(settings, store, metrics)
        store.log_event("server.started", data={"pid": os.getpid()})
        try:
            yield
        finally:
            if egress is not None:
                await egress.stop()
                with contextlib.suppress(FileNotFoundError):
                    settings.egress_socket_path.unlink()
            watchdog.stop()
            queue_runner.stop()
            scheduler.stop()
            with contextlib.suppress(Exception):
                store.log_event("server.stopped", data={"pid": os.getpid()})

    app.router.lifespan_context = lifespan
    return app, service


async def start_egress(settings: Settings, store: Store, metrics: Metrics) -> EgressProxy | None:
    """The egress proxy on `STATE/sock/egress.sock`, in this process's event loop; none when
    the setting `egress_proxy` is off (then nothing leaves a sandbox at all)."""
    if not settings.egress_proxy:
        with contextlib.suppress(FileNotFoundError):
            settings.egress_socket_path.unlink()
        return None
    proxy = EgressProxy(settings, store, metrics)
    sock = bind_unix_socket(settings.egress_socket_path, settings.sandbox_ids()[1])
    await proxy.start(sock)
    return proxy


def bind_unix_socket(
    path: Path, gid: int | None = None, mode: int = 0o660, shared_folder: bool = True
) -> socket.socket:
    """Bind a Unix socket with `mode` (no window with looser permissions); a shared folder
    (the one sandboxes mount) is made 0755, anything else is left as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if shared_folder:
        os.chmod(path.parent, 0o755)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # stale: the server lock proves no live server owns it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    if gid is not None and os.getuid() == 0:
        os.chown(path, -1, gid)  # sandboxes run as that group
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def _lock(settings: Settings) -> IO[str]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(settings.state_dir / "server.lock", "a+", encoding="utf-8")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = read_pid(settings)
        handle.close()
        running = f" (pid {pid})" if pid else ""
        raise Conflict(
            f"an agentvisor server is already running for {settings.state_dir}"
            f"{running}; stop it first or use another --state"
        ) from None
    return handle


def serve(settings: Settings, launcher: Launcher = no_launcher) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM."""
    lock = _lock(settings)
    fd_limit = raise_fd_limit()
    # The TCP port first: a busy one is a one-line error before anything answers anywhere.
    tcp = _bind_tcp(settings) if settings.tcp_port is not None else None
    try:
        app, service = build_app(settings, launcher=launcher)
    except OSError as exc:  # a full disk, an unwritable state dir
        raise ServerUnavailable(
            f"cannot open the state in {settings.state_dir}: {exc.strerror or exc}"
        ) from None
    settings.socket_dir.mkdir(parents=True, exist_ok=True)  # mounted by every sandbox
    os.chmod(settings.socket_dir, 0o755)
    sockets = [
        bind_unix_socket(settings.socket_path, settings.sandbox_ids()[1], shared_folder=False)
    ]
    if tcp is not None:
        sockets.append(tcp)
    settings.pid_path.write_text(f"{os.getpid()}\n", encoding="utf-8")
    gate = ConnectionGate.from_settings(settings, fd_limit)
    config = uvicorn.Config(
        SandboxRequestLimit(
            app,
            str(settings.state_dir / "asock"),
            settings.api_max_requests_per_sandbox,
            settings.api_sandbox_request_slots,
            settings.api_sandbox_requests_per_second,
        ),
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # no proxy in front: a Unix socket, or loopback when asked
        server_header=False,
        timeout_keep_alive=settings.api_keep_alive_s,  # type: ignore[arg-type]  # a float works
        timeout_graceful_shutdown=3,
        # Connections are limited per sandbox and per socket by the gate, not by uvicorn's
        # `limit_concurrency`, which would refuse the operator too (docs/limits.md).
        http=gated_protocol(gate),
        backlog=BACKLOG,
    )
    log_limit.install(settings.log_repeat_max, settings.log_repeat_interval_s)
    listeners = SandboxListeners(settings, gate, bind_unix_socket)
    app.state.on_agent_registered = listeners.ensure
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into an exit so the clean-up
    # below (socket, pid file, lock) runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        ApiServer(config, listeners, service.store, service.waiters).run(sockets=sockets)
    finally:
        listeners.close()
        for path in (settings.socket_path, settings.pid_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        service.store.close()
        lock.close()


def _bind_tcp(settings: Settings) -> socket.socket:
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        tcp.bind((settings.tcp_host, settings.tcp_port or 0))
    except OSError as exc:
        tcp.close()
        raise Conflict(
            f"cannot listen on {settings.tcp_host}:{settings.tcp_port}: "
            f"{exc.strerror or exc}; choose another --port, or stop what uses it "
            f"(ss -ltnp 'sport = :{settings.tcp_port}')"
        ) from None
    tcp.listen(512)
    tcp.setblocking(False)
    return tcp


class ApiServer(uvicorn.Server):
    """uvicorn's server, which also serves every sandbox's own socket (with the same
    protocol, hence the same app, limits and graceful shutdown)."""

    def __init__(
        self,
        config: uvicorn.Config,
        listeners: SandboxListeners,
        store: Store,
        waiters: InboxWaiters | None = None,
    ) -> None:
        super().__init__(config)
        self.listeners = listeners
        self.store = store
        self.waiters = waiters

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        import asyncio

        config = self.config

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        projects = {p["id"]: p["name"] for p in self.store.list_projects()}
        agents = [
            (projects[a["project_id"]], a["role"])
            for a in self.store.list_agents()
            if a["project_id"] in projects
        ]
        self.listeners.start(asyncio.get_running_loop(), protocol, agents)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.listeners.close()  # accept nothing more; open connections end as uvicorn's do
        if self.waiters is not None:
            self.waiters.close()  # long polls answer 204 now rather than being cancelled
        await super().shutdown(sockets)
