"""Connections to the host API, limited before any request is read (docs/limits.md).

Every listener is counted apart: the host's socket (`STATE/api.sock`: the operator, never
mounted into a sandbox) with room of its own, and each sandbox's own socket
(agentvisor.sandbox.sandbox_sockets), charged as it accepts. A connection that sends no request
head within `api_header_timeout_s` is closed, so idle ones cannot pile up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass, field

from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # uvicorn's C parser (uvicorn[standard]); h11 when it is missing
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as FastProtocol
except ImportError:  # pragma: no cover - httptools is a declared dependency
    FastProtocol = H11Protocol  # type: ignore[misc, assignment]

from agentvisor.config import Settings
from agentvisor.core.rate_limit import PerKeyCounter

log = logging.getLogger("agentvisor.connections")

FD_RESERVE = 512  # descriptors kept for the database, the logs, Docker, git and the operator


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard one; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def _refusal(status: int, reason: str, detail: str, retry_s: int) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"retry-after: {retry_s}\r\nconnection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class ConnectionGate:
    """The counts, shared by every connection of one server."""

    per_sandbox: int
    total: int
    operator_max: int
    header_timeout_s: float
    sandboxes: PerKeyCounter = field(init=False)
    operator: PerKeyCounter = field(init=False)
    sandbox_paths: set[str] = field(default_factory=set)  # the sandboxes' sockets
    on_release: Callable[[str], None] | None = None  # a sandbox's connection closed
    refused: int = 0

    def __post_init__(self) -> None:
        self.sandboxes = PerKeyCounter(self.per_sandbox, self.total)
        self.operator = PerKeyCounter(self.operator_max, self.operator_max)

    @classmethod
    def from_settings(cls, settings: Settings, fd_limit: int) -> ConnectionGate:
        room = max(fd_limit - FD_RESERVE - settings.api_operator_max_connections, 64)
        return cls(
            per_sandbox=settings.api_max_connections_per_sandbox,
            total=min(settings.api_max_connections, room),
            operator_max=settings.api_operator_max_connections,
            header_timeout_s=settings.api_header_timeout_s,
        )

    def admit(self, transport: asyncio.BaseTransport) -> tuple[PerKeyCounter, str, bytes | None]:
        """Charge a new connection: (its counter, its key, None) or, refused, the answer.
        A sandbox's socket charged it already as it accepted (and accepts no more at the
        limit); the host's socket is charged here."""
        sockname = transport.get_extra_info("sockname")
        if isinstance(sockname, str) and sockname in self.sandbox_paths:
            return self.sandboxes, sockname, None
        refused = self.operator.acquire("operator")
        if refused is None:
            return self.operator, "operator", None
        self.refused += 1
        limit = f"{self.operator_max} (setting api_operator_max_connections)"
        log.warning("refused a connection to the host's socket: %s are open", limit)
        detail = (
            f"too many connections open to the host API's socket: {limit} are open; close "
            "idle ones and retry in 1 s"
        )
        return self.operator, "operator", _refusal(503, "Busy", detail, 1)

    def release(self, counter: PerKeyCounter, key: str) -> None:
        counter.release(key)
        if counter is self.sandboxes and self.on_release is not None:
            self.on_release(key)


class GatedProtocol(FastProtocol):
    """uvicorn's HTTP protocol (httptools' parser: a third of h11's CPU per request), charged
    to a `ConnectionGate` and closed when idle before a request head. `gate` is set on a
    subclass made by `gated_protocol`."""

    gate: ConnectionGate

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        counter, key, refusal = self.gate.admit(transport)
        if refusal is not None:
            self._charged: tuple[PerKeyCounter, str] | None = None
            transport.write(refusal)
            transport.close()
            return
        self._charged = (counter, key)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            if self._header_timer is None:
                self._arm_header_timer()
        else:
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._cancel_header_timer()  # uvicorn's keep-alive timeout takes over

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        charged = getattr(self, "_charged", None)
        if charged is not None:
            self.gate.release(*charged)
            self._charged = None
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.gate.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()


def gated_protocol(gate: ConnectionGate) -> type[GatedProtocol]:
    return type("GatedProtocol", (GatedProtocol,), {"gate": gate})
