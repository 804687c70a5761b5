"""The host's egress proxy: the only way from a sandbox to the web. An asyncio server on
`STATE/sock/egress.sock` (each sandbox's shim relays 127.0.0.1:7398 to it) that speaks
HTTP/1.1 through h11: CONNECT tunnels (no TLS interception) and absolute-form plain HTTP.

A tunnel, once allowed, is spliced in the kernel (`os.splice` through a pipe, one thread per
direction, `agentvisor.server.egress.tunnel`) so that downloads run near loopback speed; plain HTTP
stays in the event loop, framed by h11 on both sides.

Who asks is the token in `Proxy-Authorization: Basic agent:<token>`; what may go out is the
operator's allowlist (`agentvisor.server.egress.rules`). A name is resolved once, every address is
checked, and the proxy connects to a checked address: no second resolution. Every request is
an event `egress.request` and a counter. Bounded: connections per agent and in all, timeouts,
256 KiB reads, a 1 MiB pipe per tunnel direction.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11

from agentvisor.config import Settings
from agentvisor.server.egress.allowlist import EVENT_KIND, rules_for
from agentvisor.server.egress.event_limit import EventLimit
from agentvisor.server.egress.rules import (
    Decision,
    RuleError,
    allow_command,
    decide_addresses,
    decide_name,
    split_authority,
)
from agentvisor.server.egress.tunnel import POLL_S, Conn, shut, splice, widen
from agentvisor.server.metrics import Metrics
from agentvisor.store.database import Row, Store

log = logging.getLogger("agentvisor.egress")

MAX_HEAD_BYTES = 32 * 1024
HEAD_TIMEOUT_S = 15.0
DNS_TIMEOUT_S = 5.0
# Hop-by-hop headers (RFC 9110 7.6.1) and the proxy's own: never passed on.
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authorization",
    b"proxy-authenticate",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"upgrade",
}
METHODS = {b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS", b"CONNECT"}
REASONS = {
    "allowed",
    "not-listed",
    "ip-literal",
    "non-public-address",
    "unresolvable",
    "bad-host",
    "bad-port",
    "bad-request",
    "no-credentials",
    "too-many-connections",
    "upstream-unreachable",
}

Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass
class _Request:
    """What one client connection asked and what became of it: the event's data."""

    role: str | None = None
    agent_id: int | None = None
    project_id: int | None = None
    method: str = ""
    host: str = ""
    port: int = 0
    allowed: bool = False
    reason: str = "bad-request"
    rule: str = ""
    status: int = 0
    address: str = ""
    bytes_up: int = 0
    bytes_down: int = 0
    started: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)


class _Denied(Exception):
    def __init__(self, status: int, reason: str, text: str) -> None:
        super().__init__(text)
        self.status, self.reason, self.text = status, reason, text


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for *_, sockaddr in infos:
        if sockaddr[0] not in seen:
            seen.append(str(sockaddr[0]))
    return seen


class EgressProxy:
    """Serve on an already bound Unix socket (`start(sock)`) until `stop()`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        metrics: Metrics,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.resolver = resolver
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._tunnels: set[tuple[socket.socket, socket.socket]] = set()
        self._per_agent: dict[int, int] = {}
        self._event_limit = EventLimit(settings.egress_events_per_minute, 60.0)
        self._flush: asyncio.TimerHandle | None = None
        self._writes: set[asyncio.Future[None]] = set()
        # Two threads per open tunnel at most (one per direction).
        self._pool = ThreadPoolExecutor(
            max_workers=2 * settings.egress_max_connections, thread_name_prefix="egress"
        )

    async def start(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._listener = sock
        self._accepting = asyncio.ensure_future(self._accept_loop(sock))

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        for pair in list(self._tunnels):
            shut(*pair)  # the splicing threads see it and end
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._flush is not None:
            self._flush.cancel()
        await self._flush_due(everything=True)  # what a flood's unfinished minute held back
        if self._listener is not None:
            self._listener.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def connections(self) -> int:
        return len(self._tasks)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _ = await loop.sock_accept(listener)
            except OSError as error:  # EMFILE and the like: the next try may work
                log.warning("egress: accept failed: %s", error)
                await asyncio.sleep(0.1)
                continue
            client.setblocking(False)
            conn = Conn(client, self.settings.egress_idle_timeout_s)
            task = asyncio.ensure_future(self._accept(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _accept(self, client: Conn) -> None:
        request = _Request()
        try:
            await self._serve(client, request)
        except _Denied as denied:
            request.allowed, request.reason, request.status = False, denied.reason, denied.status
            with contextlib.suppress(Exception):
                await _answer(client, denied.status, denied.text, request)
        except (TimeoutError, OSError, h11.ProtocolError) as error:
            log.debug("egress: connection ended: %s", error)
        finally:
            if request.agent_id is not None:
                left = self._per_agent.get(request.agent_id, 1) - 1
                if left > 0:
                    self._per_agent[request.agent_id] = left
                else:
                    self._per_agent.pop(request.agent_id, None)
            client.close()
            if request.method:
                await self._record(request)

    # -- one request --------------------------------------------------------------------------

    async def _serve(self, client: Conn, request: _Request) -> None:
        if len(self._tasks) > self.settings.egress_max_connections:
            request.method = "?"
            raise _Denied(503, "too-many-connections", "the egress proxy is at its limit")
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        head = await asyncio.wait_for(_next_request(conn, client, request), HEAD_TIMEOUT_S)
        method = head.method.upper()
        request.method = method.decode("ascii", "replace") if method in METHODS else "other"
        agent = await self._agent(head.headers)
        request.agent_id, request.project_id = int(agent["id"]), int(agent["project_id"])
        request.role = str(agent["role"])
        count = self._per_agent.get(request.agent_id, 0) + 1
        self._per_agent[request.agent_id] = count
        if count > self.settings.egress_max_connections_per_agent:
            raise _Denied(
                429,
                "too-many-connections",
                f"{request.role} has {count - 1} connections through the egress proxy open, "
                "the limit (egress_max_connections_per_agent); close some",
            )
        target = head.target.decode("ascii", "replace")
        if method == b"CONNECT":
            host, port = _target(target, None, request)
            while not isinstance(await _next_event(conn, client, request, True), h11.EndOfMessage):
                pass  # a CONNECT has no body; h11 then waits for our answer
            upstream = await self._open(host, port, request)
            try:
                await self._tunnel(conn, client, upstream, request)
            finally:
                upstream.close()
            return
        url = urlsplit(target)
        if url.scheme.lower() != "http" or not url.netloc or "@" in url.netloc:
            request.host = target[:200]
            raise _Denied(
                400,
                "bad-request",
                "this is an HTTP proxy: send http:// URLs in absolute form, https:// by CONNECT",
            )
        host, port = _target(url.netloc, 80, request)
        upstream = await self._open(host, port, request)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        try:
            await self._forward(conn, client, upstream, head, path, request)
        finally:
            upstream.close()

    async def _agent(self, headers: Sequence[tuple[bytes, bytes]]) -> Row:
        value = next((v for k, v in headers if k == b"proxy-authorization"), None)
        token = _basic_password(value) if value else None
        agent = await asyncio.to_thread(self.store.agent_by_token, token) if token else None
        if agent is None:
            raise _Denied(
                407,
                "no-credentials",
                "the egress proxy needs the agent's token: HTTP_PROXY=http://agent:<token>@"
                "127.0.0.1:7398 (agentvisor sets it in every sandbox)",
            )
        return agent

    async def _open(self, host: str, port: int, request: _Request) -> Conn:
        """The decision, then a connection to a checked address."""
        assert request.project_id is not None
        rules = await asyncio.to_thread(rules_for, self.settings, self.store, request.project_id)
        decision, rule = decide_name(host, port, rules)
        if rule is None or not decision.allowed:
            raise self._refusal(decision, host, port, request)
        try:
            addresses = await asyncio.wait_for(self.resolver(host, port), DNS_TIMEOUT_S)
        except (TimeoutError, OSError, UnicodeError):
            addresses = []
        decision, checked = decide_addresses(host, port, rule, addresses)
        request.rule = decision.rule
        if not decision.allowed:
            raise self._refusal(decision, host, port, request)
        last: Exception | None = None
        loop = asyncio.get_running_loop()
        for address in checked:  # the checked addresses, never a second resolution
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(
                    loop.sock_connect(sock, (address, port)),
                    self.settings.egress_connect_timeout_s,
                )
            except (TimeoutError, OSError) as error:
                sock.close()
                last = error
                continue
            request.allowed, request.reason, request.address = True, "allowed", address
            return Conn(sock, self.settings.egress_idle_timeout_s)
        raise _Denied(
            502, "upstream-unreachable", f"{host}:{port} is allowed but did not answer ({last})"
        )

    def _refusal(self, decision: Decision, host: str, port: int, request: _Request) -> _Denied:
        project = self.store.get_project_by_id(request.project_id or 0)["name"]
        command = allow_command(project, host, port)
        if decision.reason == "unresolvable":
            return _Denied(502, "unresolvable", f"{host} does not resolve (it is allowed)")
        why = {
            "not-listed": "is not on this project's egress allowlist",
            "ip-literal": "is an IP address, allowed only when listed exactly with its port",
            "non-public-address": (
                "resolves to a loopback, private, link-local or other non-public address, "
                "allowed only when listed exactly with its port"
            ),
            "bad-port": "has no valid port",
        }.get(decision.reason, "is not allowed")
        text = (
            f"agentvisor egress proxy: {host}:{port} {why}.\n"
            f"The operator can allow it with: {command}\n"
        )
        return _Denied(403, decision.reason, text)

    # -- moving bytes -------------------------------------------------------------------------

    async def _tunnel(
        self, conn: h11.Connection, client: Conn, upstream: Conn, request: _Request
    ) -> None:
        request.status = 200
        await _send(client, conn, h11.Response(status_code=200, headers=[]), request)
        early, _ = conn.trailing_data
        if early:
            await upstream.send(early)
            request.bytes_up += len(early)
        pair = (client.sock, upstream.sock)
        widen(client.sock)
        self._tunnels.add(pair)
        loop = asyncio.get_running_loop()
        idle_s = self.settings.egress_idle_timeout_s
        moves = [
            loop.run_in_executor(self._pool, splice, client.sock, upstream.sock, request, True,
                                 idle_s),
            loop.run_in_executor(self._pool, splice, upstream.sock, client.sock, request, False,
                                 idle_s),
        ]  # fmt: skip
        try:
            done, _ = await asyncio.wait(moves, return_when=asyncio.FIRST_EXCEPTION)
            if any(m.exception() for m in done):
                shut(*pair)
            await asyncio.gather(*moves, return_exceptions=True)
        finally:
            shut(*pair)  # also when cancelled: the threads see it at once and end
            # Before the sockets are closed (and their numbers reused): the threads use them.
            await asyncio.wait(moves, timeout=POLL_S * 2)
            self._tunnels.discard(pair)

    async def _forward(
        self,
        conn: h11.Connection,
        client: Conn,
        upstream: Conn,
        head: h11.Request,
        path: str,
        request: _Request,
    ) -> None:
        """One plain-HTTP request and its answer, re-framed by h11 on both sides (so no
        request smuggling past the proxy), then both connections close."""
        up = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        headers = [(k, v) for k, v in head.headers if k not in HOP_BY_HOP]
        if not any(k == b"host" for k, _ in headers):
            headers.insert(0, (b"host", _host_header(request.host, request.port)))
        headers.append((b"connection", b"close"))
        outgoing = h11.Request(method=head.method, target=path.encode(), headers=headers)
        await upstream.send(up.send(outgoing) or b"")
        while True:  # the request's body
            event = await _next_event(conn, client, request, True)
            if isinstance(event, h11.Data | h11.EndOfMessage):
                await upstream.send(up.send(event) or b"")
            if isinstance(event, h11.EndOfMessage):
                break
        while True:  # the answer
            event = await _next_event(up, upstream, request, False)
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                request.status = event.status_code
                kept = [(k, v) for k, v in event.headers if k not in HOP_BY_HOP]
                kept.append((b"connection", b"close"))
                answer = h11.Response(
                    status_code=event.status_code, headers=kept, reason=event.reason
                )
                await _send(client, conn, answer, request)
            elif isinstance(event, h11.Data):
                await _send(client, conn, event, request)
            elif isinstance(event, h11.EndOfMessage):
                await _send(client, conn, h11.EndOfMessage(), request)
                break

    # -- the record ---------------------------------------------------------------------------

    async def _record(self, request: _Request) -> None:
        data = {
            "role": request.role,
            "host": request.host,
            "port": request.port,
            "method": request.method,
            "allowed": request.allowed,
            "reason": request.reason,
            "rule": request.rule,
            "status": request.status,
            "address": request.address,
            "bytes_up": request.bytes_up,
            "bytes_down": request.bytes_down,
            "duration_s": round(time.monotonic() - request.started, 3),
        }
        decision = "allowed" if request.allowed else "denied"
        reason = request.reason if request.reason in REASONS else "other"
        method = "CONNECT" if request.method == "CONNECT" else "http"
        self.metrics.inc(
            f'egress_requests|decision="{decision}",reason="{reason}",method="{method}"'
        )
        self.metrics.inc('egress_bytes|direction="up"', request.bytes_up)
        self.metrics.inc('egress_bytes|direction="down"', request.bytes_down)
        now = self.store.clock.now()
        for summary in self._event_limit.due(now):
            await self._write(summary.project_id, summary.agent_id or None, summary.data)
        if self._event_limit.admit(request.agent_id, request.project_id, data, now):
            await self._write(request.project_id, request.agent_id, data)
        elif self._flush is None:
            self._flush_soon_later()

    def _flush_soon(self) -> None:
        self._flush = None
        task = asyncio.ensure_future(self._flush_due(everything=False))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _flush_due(self, everything: bool) -> None:
        """The summaries of ended windows, so a flood's last minute is told without waiting
        for the agent's next request."""
        for summary in self._event_limit.due(self.store.clock.now(), everything):
            await self._write(summary.project_id, summary.agent_id or None, summary.data)
        if not everything and self._event_limit.next_due() is not None and self._flush is None:
            self._flush_soon_later()

    def _flush_soon_later(self) -> None:
        due = self._event_limit.next_due()
        if due is None:
            return
        delay = max(0.0, due - self.store.clock.now()) + 0.05
        self._flush = asyncio.get_running_loop().call_later(delay, self._flush_soon)

    async def _write(
        self, project_id: int | None, agent_id: int | None, data: dict[str, Any]
    ) -> None:
        try:
            await asyncio.to_thread(self.store.log_event, EVENT_KIND, project_id, agent_id, data)
        except Exception as error:  # the store is full or gone: the counter still has it
            log.warning("egress: cannot record a request: %s", error)


def _target(text: str, default_port: int | None, request: _Request) -> tuple[str, int]:
    request.host = text[:200]
    try:
        host, port = split_authority(text, default_port)
    except RuleError:
        raise _Denied(400, "bad-host", f"{text[:200]!r} is not HOST:PORT") from None
    request.host, request.port = host, port
    if not 1 <= port <= 65535:
        raise _Denied(400, "bad-port", f"{port} is not a TCP port")
    return host, port


def _host_header(host: str, port: int) -> bytes:
    name = f"[{host}]" if ":" in host else host
    return (name if port == 80 else f"{name}:{port}").encode("ascii")


def _basic_password(value: bytes) -> str | None:
    scheme, _, encoded = value.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon and password else None


async def _next_request(conn: h11.Connection, client: Conn, request: _Request) -> h11.Request:
    event = await _next_event(conn, client, request, True)
    if not isinstance(event, h11.Request):
        raise h11.RemoteProtocolError("no request")
    return event


async def _next_event(conn: h11.Connection, peer: Conn, request: _Request, up: bool) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await peer.recv()
            if up:
                request.bytes_up += len(data)
            conn.receive_data(data)  # b"" is EOF: h11 then raises or says ConnectionClosed
            continue
        if isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("the connection closed mid-message")
        return event


async def _send(client: Conn, conn: h11.Connection, event: Any, request: _Request) -> None:
    data = conn.send(event) or b""
    request.bytes_down += len(data)
    request.last_active = time.monotonic()
    await client.send(data)


async def _answer(client: Conn, status: int, text: str, request: _Request) -> None:
    """A refusal as plain text, then the connection closes (h11 is bypassed: the request may
    not have been readable)."""
    body = text.encode("utf-8", "replace")
    reason = {400: "Bad Request", 403: "Forbidden", 407: "Proxy Authentication Required",
              429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable"}  # fmt: skip
    head = [
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if status == 407:
        head.append('Proxy-Authenticate: Basic realm="agentvisor"')
    data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    request.bytes_down += len(data)
    await client.send(data)
