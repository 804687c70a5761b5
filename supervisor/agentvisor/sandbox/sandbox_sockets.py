"""Each sandbox's own API socket (docs/limits.md): `STATE/asock/<id>/api.sock`, the folder
mounted at /run/agentvisor/api in that sandbox alone. A listener of its own per sandbox means
its connections are counted before a byte is read, and at its limit the server stops accepting
on it: the sandbox's further connects wait in its own queue, costing the server nothing, while
every other sandbox's and the operator's socket are served as before.

The folder also holds `egress.sock`, a symlink to the shared egress socket as the sandbox sees
it (/run/agentvisor/sock/egress.sock): the shim finds the egress proxy beside its API socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from agentvisor.config import Settings

if TYPE_CHECKING:  # uvicorn only where the server runs, not in every CLI call
    from agentvisor.server.api.connections import ConnectionGate

log = logging.getLogger("agentvisor.connections")

API_DIR_TARGET = "/run/agentvisor/api"
EGRESS_IN_SANDBOX = "/run/agentvisor/sock/egress.sock"
LISTEN_BACKLOG = 64  # a sandbox's connects waiting past that get EAGAIN, in its own queue
ACCEPT_BATCH = 16  # accepted per wake-up, so one busy socket cannot hold the loop


def sandbox_socket_dir(settings: Settings, project: str, role: str) -> Path:
    """The folder of the sandbox's own socket: short (socket paths stay under 108 bytes)."""
    digest = hashlib.sha256(f"{project}\0{role}".encode()).hexdigest()[:16]
    return settings.state_dir / "asock" / digest


def prepare_folder(settings: Settings, project: str, role: str) -> Path:
    """Make the folder (0755) with its egress symlink; idempotent."""
    folder = sandbox_socket_dir(settings, project, role)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    link = folder / "egress.sock"
    if not link.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(EGRESS_IN_SANDBOX)
    return folder


class _Listener:
    def __init__(self, sock: socket.socket, path: str) -> None:
        self.sock = sock
        self.path = path
        self.reading = False


class SandboxListeners:
    """The sandboxes' listening sockets, served in the server's event loop with uvicorn's
    protocol (through `factory`)."""

    def __init__(
        self, settings: Settings, gate: ConnectionGate, bind: Callable[..., socket.socket]
    ) -> None:
        self.settings = settings
        self.gate = gate
        self._bind = bind
        self._loop: asyncio.AbstractEventLoop | None = None
        self._factory: Callable[[], asyncio.Protocol] | None = None
        self._listeners: dict[str, _Listener] = {}
        self._lock = threading.Lock()
        gate.on_release = self._released

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.Protocol],
        agents: Iterable[tuple[str, str]],
    ) -> None:
        self._loop, self._factory = loop, factory
        for project, role in agents:
            self.ensure(project, role)

    def ensure(self, project: str, role: str) -> None:
        """Listen on the sandbox's socket if not yet; callable from any thread."""
        folder = prepare_folder(self.settings, project, role)
        path = str(folder / "api.sock")
        with self._lock:
            if path in self._listeners or self._loop is None:
                return
            sock = self._bind(Path(path), self.settings.sandbox_ids()[1])
            sock.listen(LISTEN_BACKLOG)
            listener = _Listener(sock, path)
            self._listeners[path] = listener
            self.gate.sandbox_paths.add(path)
        self._loop.call_soon_threadsafe(self._resume, listener)

    def close(self) -> None:
        with self._lock:
            listeners, self._listeners = list(self._listeners.values()), {}
        for listener in listeners:
            self._pause(listener)
            listener.sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(listener.path)

    # -- in the event loop -----------------------------------------------------------------
    def _resume(self, listener: _Listener) -> None:
        if not listener.reading and listener.sock.fileno() >= 0 and self._loop is not None:
            self._loop.add_reader(listener.sock.fileno(), self._accept, listener)
            listener.reading = True

    def _pause(self, listener: _Listener) -> None:
        if listener.reading and self._loop is not None:
            self._loop.remove_reader(listener.sock.fileno())
            listener.reading = False

    def _released(self, path: str) -> None:
        listener = self._listeners.get(path)
        room = self.gate.sandboxes.count(path) < self.gate.per_sandbox
        if listener is not None and not listener.reading and room:
            self._resume(listener)

    def _accept(self, listener: _Listener) -> None:
        assert self._loop is not None and self._factory is not None
        for _ in range(ACCEPT_BATCH):
            refused = self.gate.sandboxes.acquire(listener.path)
            if refused == "key":  # at its limit: accept nothing more until one closes
                self._pause(listener)
                return
            try:
                conn, _ = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                if refused is None:
                    self.gate.sandboxes.release(listener.path)
                return
            except OSError as error:
                if refused is None:
                    self.gate.sandboxes.release(listener.path)
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("out of descriptors accepting on a sandbox's socket: %s", error)
                    self._pause(listener)
                    self._loop.call_later(0.5, self._resume, listener)
                return
            if refused == "total":
                log.warning(
                    "refused a connection: all sandboxes hold %s (setting api_max_connections)",
                    self.gate.sandboxes.total,
                )
                conn.close()
                continue
            conn.setblocking(False)
            self._loop.create_task(self._serve(conn, listener.path))

    async def _serve(self, conn: socket.socket, path: str) -> None:
        assert self._loop is not None and self._factory is not None
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:
            conn.close()
            self.gate.sandboxes.release(path)
            self._released(path)
