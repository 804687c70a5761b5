"""Connections to the host API, limited before any request is read (docs/limits.md).

The operator has a socket of its own (`STATE/operator.sock`, never mounted into a sandbox)
with room of its own. On the sandboxes' socket each connection is charged to the sandbox it
comes from, told by the peer's credentials (SO_PEERCRED: the process, then its cgroup, which a
container's processes share and cannot leave); over the sandbox's limit or the socket's total
the connection is answered at once and closed. A connection that sends no request head within
`api_header_timeout_s` is closed, so idle ones cannot pile up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from supervisor.config import Settings
from supervisor.rate_limit import PerKeyCounter

log = logging.getLogger("agentvisor.connections")

FD_RESERVE = 512  # descriptors kept for the database, the logs, Docker, git and the operator
_CREDS = struct.Struct("3i")


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


def cgroup_of(pid: int) -> str | None:
    """The most specific cgroup path of `pid` (None when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    paths = [line.split(":", 2)[2] for line in lines if line.count(":") >= 2]
    return max(paths, key=len, default=None)


def peer_key(sock: Any) -> str:
    """Who is at the other end of a Unix socket: its cgroup, else its uid."""
    try:
        pid, uid, _ = _CREDS.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size)
        )
    except (OSError, AttributeError):
        return "unknown"
    cgroup = cgroup_of(pid) if pid > 0 else None
    return f"cgroup {cgroup}" if cgroup and cgroup != "/" else f"uid {uid}"


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

    operator_path: str
    per_sandbox: int
    total: int
    operator_max: int
    header_timeout_s: float
    sandboxes: PerKeyCounter = field(init=False)
    operator: PerKeyCounter = field(init=False)
    refused: int = 0

    def __post_init__(self) -> None:
        self.sandboxes = PerKeyCounter(self.per_sandbox, self.total)
        self.operator = PerKeyCounter(self.operator_max, self.operator_max)

    @classmethod
    def from_settings(cls, settings: Settings, fd_limit: int) -> ConnectionGate:
        room = max(fd_limit - FD_RESERVE - settings.api_operator_max_connections, 64)
        return cls(
            operator_path=str(settings.operator_socket_path),
            per_sandbox=settings.api_max_connections_per_sandbox,
            total=min(settings.api_max_connections, room),
            operator_max=settings.api_operator_max_connections,
            header_timeout_s=settings.api_header_timeout_s,
        )

    def admit(self, transport: asyncio.BaseTransport) -> tuple[PerKeyCounter, str, bytes | None]:
        """Charge a new connection: (its counter, its key, None) or, refused, the answer."""
        sockname = transport.get_extra_info("sockname")
        if not isinstance(sockname, str):  # the loopback TCP listener: the operator's tools
            counter, key = self.operator, "tcp"
        elif sockname == self.operator_path:
            counter, key = self.operator, "operator"
        else:
            counter, key = self.sandboxes, peer_key(transport.get_extra_info("socket"))
        refused = counter.acquire(key)
        if refused is None:
            return counter, key, None
        self.refused += 1
        if counter is self.operator:
            limit = f"the operator's {self.operator_max} (setting api_operator_max_connections)"
        elif refused == "key":
            limit = f"this sandbox's {self.per_sandbox} (setting api_max_connections_per_sandbox)"
        else:
            limit = f"all sandboxes' {counter.total} (setting api_max_connections)"
        log.warning("refused a connection to the API over %s connections open", limit)
        detail = (
            f"too many connections open to the host API: {limit} are open; close idle "
            "ones and retry in 1 s"
        )
        status, reason = (429, "Too Many Requests") if refused == "key" else (503, "Busy")
        return counter, key, _refusal(status, reason, detail, 1)


class GatedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, charged to a `ConnectionGate` and closed when idle before a
    request head. `gate` is set on a subclass made by `gated_protocol`."""

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
            charged[0].release(charged[1])
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


def gated_protocol(gate: ConnectionGate) -> type[GatedH11Protocol]:
    return type("GatedH11Protocol", (GatedH11Protocol,), {"gate": gate})
