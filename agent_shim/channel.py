"""The sandbox's channel to the host: a TCP listener on loopback whose every connection is
relayed byte for byte to a Unix socket of the host's: the API's (git over HTTP, port 7399) or
the egress proxy's (HTTP_PROXY, port 7398).

One thread and one selector serve every connection, so a sandbox near its pids limit still
has its channel; buffers are bounded and a side is read only while the other can take more.
With `splice`, the bytes wait in a pipe per direction instead of a Python buffer and never
leave the kernel (`os.splice`): the egress relay, which carries downloads.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent_shim.shim import Backoff, StateLog

log = logging.getLogger("agent_shim")

DEFAULT_PORT = 7399
MAX_CONNECTIONS = 64
BUFFER_BYTES = 64 * 1024  # per direction and connection: at most 8 MiB for 64 connections
CONNECT_GRACE_S = 5.0  # a client waits this long for a restarting API before it is closed
CONNECT_RETRY_S = 0.1
BUFFER_BYTES_SPLICED = 1024 * 1024  # a splicing relay's pipe, per direction
# A splicing relay's client socket may queue this much (TCP under memory pressure shrinks it):
# with the autotuned default a pipeful went out in a dozen turns of the loop, each ending in
# EAGAIN; with this, in one. A 100 MB download took 1,000 turns, now 50.
CLIENT_SEND_BYTES_SPLICED = 4 * 1024 * 1024
SPLICE_ROUNDS = 8  # reads passed on per turn of the loop, at most
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032  # Linux; fcntl has the names from Python 3.10
_SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK if hasattr(os, "splice") else 0
IDLE_TIMEOUT_S = 3600.0  # a connection with no byte either way for this long is closed
# The API is down or its backlog is full: try again, the client is held meanwhile.
_RETRYABLE = (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN)


class _Side:
    """One socket of a relayed pair and the bytes waiting to be written to it: in `outbox`, or
    (a splicing relay) in a pipe in the kernel, never copied through Python."""

    def __init__(self, sock: socket.socket | None, pipe: tuple[int, int] | None = None) -> None:
        self.sock = sock
        self.outbox = bytearray()  # read from the peer, not yet written here
        self.pipe = pipe  # (read end, write end)
        self.piped = 0  # bytes in the pipe
        self.capacity = _pipe_size(pipe[1]) if pipe else 0
        self.read_eof = False  # this side sent EOF
        self.write_shut = False  # the peer's EOF was passed on (shutdown SHUT_WR)
        self.mask = 0

    @property
    def pending(self) -> int:
        return self.piped if self.pipe else len(self.outbox)

    def close_pipe(self) -> None:
        if self.pipe:
            for fd in self.pipe:
                os.close(fd)
            self.pipe = None


def _pipe_size(fd: int) -> int:
    """Ask for a pipe as big as the relay's buffer; whatever the kernel gives is the bound."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, BUFFER_BYTES_SPLICED)
    return int(fcntl.fcntl(fd, F_GETPIPE_SZ))


@dataclass(eq=False)
class _Pair:
    client: _Side
    upstream: _Side
    opened_at: float
    last_active: float
    connect_deadline: float
    retry_at: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    closed: bool = field(default=False)

    def peer(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client


class Relay:
    """Accepts on `host:port` and relays each connection to the Unix socket `upstream_path`.

    `serve()` runs the loop until `stop()`; `start()` runs it in a daemon thread. The port is
    bound again with backoff if it is taken (a previous shim's socket still closing).
    """

    def __init__(
        self,
        upstream_path: str,
        port: int = DEFAULT_PORT,
        host: str = "127.0.0.1",
        max_connections: int = MAX_CONNECTIONS,
        buffer_bytes: int = BUFFER_BYTES,
        connect_grace_s: float = CONNECT_GRACE_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        states: StateLog | None = None,
        name: str = "channel",
        splice: bool = False,
    ) -> None:
        self.name = name  # in log lines and the thread's name: "channel", "egress"
        # Move bytes through a pipe in the kernel (os.splice): downloads at loopback speed.
        self.splice = splice and hasattr(os, "splice")
        self.upstream_path = upstream_path
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.buffer_bytes = buffer_bytes
        self.connect_grace_s = connect_grace_s
        self.idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._states = states or StateLog()
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._listening = False
        self._pairs: set[_Pair] = set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopped = threading.Event()
        self._bound = threading.Event()
        self._thread: threading.Thread | None = None

    # Life cycle.

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.serve, name=self.name, daemon=True)
        self._thread.start()
        return self._thread

    def wait_bound(self, timeout_s: float) -> int | None:
        """The port listened on once bound (a real port when 0 was asked for), else None."""
        return self.port if self._bound.wait(timeout_s) else None

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):  # closed already: the loop has ended
            self._wake_w.send(b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def connections(self) -> int:
        return len(self._pairs)

    def serve(self) -> None:
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            if self._bind():
                while not self._stopped.is_set():
                    self._turn()
        finally:
            for pair in list(self._pairs):
                self._close(pair)
            if self._listener is not None:
                self._listener.close()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _bind(self) -> bool:
        backoff = Backoff(0.1, 5.0)
        while not self._stopped.is_set():
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind((self.host, self.port))
                listener.listen(128)
            except OSError as error:
                listener.close()
                self._states.report(
                    self.name,
                    f"bind {error.errno}",
                    "%s: cannot listen on %s:%s (%s); retrying",
                    self.name,
                    self.host,
                    self.port,
                    error.strerror or error,
                    level=logging.WARNING,
                )
                self._stopped.wait(backoff.next())
                continue
            listener.setblocking(False)
            self._listener = listener
            self.port = listener.getsockname()[1]
            self._listen(True)
            self._states.report(self.name, "ok", "%s listening", self.name)
            log.info("%s: %s:%s relayed to %s", self.name, self.host, self.port, self.upstream_path)
            self._bound.set()
            return True
        return False

    def _listen(self, on: bool) -> None:
        """Accept while below the limit; above it new clients wait in the kernel's backlog."""
        if self._listener is None or on == self._listening:
            return
        if on:
            self._selector.register(self._listener, selectors.EVENT_READ, None)
        else:
            self._selector.unregister(self._listener)
        self._listening = on

    # The loop.

    def _turn(self) -> None:
        events = self._selector.select(self._timeout())
        for key, mask in events:
            if key.fileobj is self._wake_r:
                self._drain_wake()
            elif key.fileobj is self._listener:
                self._accept()
            else:
                pair, side = key.data
                if not pair.closed:
                    self._serve_side(pair, side, mask)
        self._tick()

    def _timeout(self) -> float | None:
        """Until the next connect retry or idle deadline; None (block) when there is none."""
        if not self._pairs:
            return None
        now = self._clock()
        deadlines = []
        for pair in self._pairs:
            if pair.upstream.sock is None:
                deadlines.append(pair.retry_at)
            deadlines.append(pair.last_active + self.idle_timeout_s)
        return max(0.0, min(deadlines) - now)

    def _tick(self) -> None:
        now = self._clock()
        for pair in list(self._pairs):
            if pair.closed:
                continue
            if now - pair.last_active >= self.idle_timeout_s:
                log.info(
                    "%s: closing a connection idle for %.0f s", self.name, now - pair.last_active
                )
                self._close(pair)
            elif pair.upstream.sock is None and now >= pair.retry_at:
                self._connect_upstream(pair)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(64):
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        assert self._listener is not None
        while len(self._pairs) < self.max_connections:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE and the like: report, try on the next event
                self._states.report(
                    f"{self.name}-accept",
                    f"error {error.errno}",
                    "%s: accept failed: %s",
                    self.name,
                    error,
                    level=logging.WARNING,
                )
                return
            client.setblocking(False)
            # Relayed answers come in small writes (a model's streamed events): send each at
            # once rather than wait for the peer's delayed ACK (Nagle), up to 40 ms a write.
            with contextlib.suppress(OSError):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.splice:
                    client.setsockopt(
                        socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SEND_BYTES_SPLICED
                    )
            now = self._clock()
            pair = _Pair(
                client=_Side(client, self._pipe()),
                upstream=_Side(None, self._pipe()),
                opened_at=now,
                last_active=now,
                connect_deadline=now + self.connect_grace_s,
            )
            self._pairs.add(pair)
            self._connect_upstream(pair)
        self._states.report(
            f"{self.name}-limit",
            "full",
            "%s: %s connections open, the limit; new ones wait",
            self.name,
            len(self._pairs),
            level=logging.WARNING,
        )
        self._listen(False)

    def _pipe(self) -> tuple[int, int] | None:
        if not self.splice:
            return None
        try:
            return os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # out of descriptors: this connection goes through Python
            return None

    def _connect_upstream(self, pair: _Pair) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.setblocking(False)
        try:
            upstream.connect(self.upstream_path)
        except OSError as error:
            upstream.close()
            now = self._clock()
            retry = error.errno in _RETRYABLE and now + CONNECT_RETRY_S < pair.connect_deadline
            if retry:
                pair.retry_at = now + CONNECT_RETRY_S
                self._update(pair, pair.client)  # keep reading the client meanwhile
                return
            self._states.report(
                f"{self.name}-upstream",
                f"error {error.errno}",
                "%s: the host's socket is not reachable at %s (%s); closing the connection",
                self.name,
                self.upstream_path,
                error.strerror or error,
                level=logging.WARNING,
            )
            self._close(pair)
            return
        self._states.report(
            f"{self.name}-upstream", "ok", "%s: the host's socket reachable again", self.name
        )
        pair.upstream.sock = upstream
        self._update(pair, pair.client)
        self._update(pair, pair.upstream)

    def _serve_side(self, pair: _Pair, side: _Side, mask: int) -> None:
        assert side.sock is not None
        peer = pair.peer(side)
        try:
            if mask & selectors.EVENT_WRITE and side.pending:
                self._write_out(side)
                pair.last_active = self._clock()
            if mask & selectors.EVENT_READ and not side.read_eof:
                room = self._room(peer) - peer.pending
                if peer.pipe:
                    count = self._splice_through(side, peer, room)
                else:
                    data = side.sock.recv(max(room, 1))
                    count = len(data)
                    if data:
                        self._pass_on(peer, data)
                if count:
                    pair.last_active = self._clock()
                    if side is pair.client:
                        pair.bytes_up += count
                    else:
                        pair.bytes_down += count
                else:
                    side.read_eof = True
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            # A reset or broken pipe on either side ends the connection: nothing is lost
            # that the ends would not see lost anyway.
            self._close(pair)
            return
        self._settle(pair)

    def _splice_through(self, side: _Side, peer: _Side, room: int) -> int:
        """Move what `side` has into `peer`'s pipe and on to `peer`, a few rounds while both
        keep up (each round a trip through the selector saved); the bytes read, 0 at EOF."""
        assert side.sock is not None and peer.pipe is not None
        total = 0
        for _ in range(SPLICE_ROUNDS):
            try:
                count = os.splice(side.sock.fileno(), peer.pipe[1], max(room, 1),
                                  flags=_SPLICE_FLAGS)  # fmt: skip
            except BlockingIOError:
                if total:
                    return total
                raise
            if not count:
                return total  # EOF when nothing came before it in this turn
            total += count
            peer.piped += count
            if peer.sock is None or peer.write_shut:
                return total
            try:
                self._write_out(peer)
            except BlockingIOError:
                return total
            room = self._room(peer) - peer.pending
            if peer.pending or room <= 0:
                return total
        return total

    def _room(self, side: _Side) -> int:
        return side.capacity if side.pipe else self.buffer_bytes

    @staticmethod
    def _write_out(side: _Side) -> None:
        assert side.sock is not None
        if side.pipe:
            side.piped -= os.splice(side.pipe[0], side.sock.fileno(), side.piped,
                                    flags=_SPLICE_FLAGS)  # fmt: skip
        else:
            sent = side.sock.send(side.outbox)
            del side.outbox[:sent]

    @staticmethod
    def _pass_on(peer: _Side, data: bytes) -> None:
        """Send what was read straight on when nothing waits before it (no trip through the
        selector for a peer that can take it); keep the rest for when it can."""
        if not peer.outbox and peer.sock is not None and not peer.write_shut:
            try:
                sent = peer.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            data = data[sent:]
        if data:
            peer.outbox += data

    def _settle(self, pair: _Pair) -> None:
        """Pass on EOFs once their side's bytes are written, close a finished pair, and set
        what each socket waits for."""
        for side in (pair.client, pair.upstream):
            peer = pair.peer(side)
            if peer.read_eof and not side.pending and not side.write_shut and side.sock:
                side.write_shut = True
                try:
                    side.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    self._close(pair)
                    return
        if pair.client.write_shut and pair.upstream.write_shut:
            self._close(pair)
            return
        self._update(pair, pair.client)
        self._update(pair, pair.upstream)

    def _update(self, pair: _Pair, side: _Side) -> None:
        if side.sock is None:
            return
        peer = pair.peer(side)
        mask = 0
        # Read only while the peer's buffer has room (and, for the client before the API
        # answers, while the held bytes stay bounded).
        if not side.read_eof and peer.pending < self._room(peer):
            mask |= selectors.EVENT_READ
        if side.pending:
            mask |= selectors.EVENT_WRITE
        if mask == side.mask:
            return
        if side.mask == 0:
            self._selector.register(side.sock, mask, (pair, side))
        elif mask == 0:
            self._selector.unregister(side.sock)
        else:
            self._selector.modify(side.sock, mask, (pair, side))
        side.mask = mask

    def _close(self, pair: _Pair) -> None:
        if pair.closed:
            return
        pair.closed = True
        for side in (pair.client, pair.upstream):
            side.close_pipe()
            if side.sock is None:
                continue
            if side.mask:
                self._selector.unregister(side.sock)
                side.mask = 0
            side.sock.close()
        self._pairs.discard(pair)
        if len(self._pairs) < self.max_connections and not self._stopped.is_set():
            if not self._listening:
                self._states.report(
                    f"{self.name}-limit", "ok", "%s: below the limit again", self.name
                )
            self._listen(True)
