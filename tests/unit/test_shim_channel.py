"""The shim's channel: real TCP clients through the relay to a real Unix socket server,
in-process."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import resource
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent_shim.channel import Relay
from tests.helpers import wait_until

Handler = Callable[[socket.socket], None]


class UnixServer:
    """A threaded server on a Unix socket running `handler` per connection."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path, self.handler = path, handler
        self.accepted = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a client that went away
            self.handler(conn)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.path.unlink(missing_ok=True)


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


@pytest.fixture
def upstream_path(short_tmp: Path) -> Path:
    return short_tmp / "api.sock"


@pytest.fixture
def make_relay(upstream_path: Path) -> Iterator[Callable[..., Relay]]:
    relays: list[Relay] = []

    def make(**options: object) -> Relay:
        relay = Relay(str(upstream_path), port=0, **options)  # type: ignore[arg-type]
        relay.start()
        assert relay.wait_bound(5.0)
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        relay.stop()


@pytest.fixture
def servers() -> Iterator[list[UnixServer]]:
    started: list[UnixServer] = []
    yield started
    for server in started:
        server.close()


def connect(relay: Relay) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    return sock


def test_bytes_flow_both_ways_and_an_eof_is_passed_on(make_relay, upstream_path, servers):
    def count_then_answer(conn: socket.socket) -> None:
        received = read_all(conn)  # until the client's EOF reaches us
        conn.sendall(b"got %d bytes" % len(received))

    servers.append(UnixServer(upstream_path, count_then_answer))
    relay = make_relay()
    with connect(relay) as client:
        client.sendall(b"hello")
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == b"got 5 bytes"
    wait_until(lambda: relay.connections == 0, message="the finished pair closed")


def test_the_servers_half_close_leaves_the_client_able_to_send(make_relay, upstream_path, servers):
    received: list[bytes] = []

    def greet_then_listen(conn: socket.socket) -> None:
        conn.sendall(b"hi")
        conn.shutdown(socket.SHUT_WR)
        received.append(read_all(conn))

    servers.append(UnixServer(upstream_path, greet_then_listen))
    relay = make_relay()
    with connect(relay) as client:
        assert read_all(client) == b"hi"  # the server's EOF arrived
        client.sendall(b"still talking")
        client.shutdown(socket.SHUT_WR)
        wait_until(lambda: received, message="the server got the client's bytes")
    assert received == [b"still talking"]


def test_megabytes_each_way_at_once_arrive_intact(make_relay, upstream_path, servers):
    payload = os.urandom(8 * 1024 * 1024)
    servers.append(UnixServer(upstream_path, echo))
    relay = make_relay(buffer_bytes=16 * 1024)
    with connect(relay) as client:
        sender = threading.Thread(
            target=lambda: (client.sendall(payload), client.shutdown(socket.SHUT_WR))
        )
        sender.start()
        echoed = read_all(client)
        sender.join()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


def test_a_client_waits_for_a_restarting_api_then_is_served(make_relay, upstream_path, servers):
    relay = make_relay(connect_grace_s=10.0)
    with connect(relay) as client:
        client.sendall(b"early")  # held while nothing listens on the socket
        servers.append(UnixServer(upstream_path, echo))
        assert client.recv(100) == b"early"


def test_a_client_is_closed_when_the_api_stays_down_and_served_once_it_is_back(
    make_relay, upstream_path, servers, caplog
):
    caplog.set_level(logging.INFO, "agent_shim")
    relay = make_relay(connect_grace_s=0.3)
    for _ in range(3):
        with connect(relay) as client:
            assert read_all(client) == b""
    assert caplog.text.count("host API not reachable") == 1  # once, not per connection
    servers.append(UnixServer(upstream_path, echo))
    with connect(relay) as client:
        client.sendall(b"back")
        assert client.recv(100) == b"back"
    assert "host API reachable again" in caplog.text


def test_connections_above_the_limit_wait_until_one_closes(make_relay, upstream_path, servers):
    server = UnixServer(upstream_path, echo)
    servers.append(server)
    relay = make_relay(max_connections=2)
    first, second, third = connect(relay), connect(relay), connect(relay)
    try:
        for client in (first, second):
            client.sendall(b"x")
            assert client.recv(1) == b"x"
        third.sendall(b"y")
        wait_until(lambda: server.accepted == 2)
        third.settimeout(0.3)
        with pytest.raises(TimeoutError):
            third.recv(1)  # accepted by the kernel, not relayed yet
        first.close()
        third.settimeout(10)
        assert third.recv(1) == b"y"
        assert server.accepted == 3
    finally:
        for client in (first, second, third):
            client.close()


def test_an_idle_connection_is_closed(make_relay, upstream_path, servers):
    servers.append(UnixServer(upstream_path, echo))
    relay = make_relay(idle_timeout_s=0.3)
    with connect(relay) as client:
        client.sendall(b"a")
        assert client.recv(1) == b"a"
        assert read_all(client) == b""  # closed after 0.3 s of silence
    wait_until(lambda: relay.connections == 0)


def test_an_idle_relay_uses_no_cpu(make_relay, upstream_path, servers):
    servers.append(UnixServer(upstream_path, echo))
    relay = make_relay()
    clients = [connect(relay) for _ in range(8)]
    try:
        for client in clients:
            client.sendall(b"z")
            assert client.recv(1) == b"z"
        before = resource.getrusage(resource.RUSAGE_SELF)
        threading.Event().wait(0.5)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert cpu_s < 0.05
    finally:
        for client in clients:
            client.close()


def test_a_taken_port_is_bound_once_it_is_free(upstream_path, servers, caplog):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    relay = Relay(str(upstream_path), port=port)
    relay.start()
    try:
        wait_until(lambda: "cannot listen" in caplog.text)
        assert relay.wait_bound(0.1) is None
        blocker.close()
        assert relay.wait_bound(10.0) == port
        servers.append(UnixServer(upstream_path, echo))
        with connect(relay) as client:
            client.sendall(b"ok")
            assert client.recv(2) == b"ok"
    finally:
        blocker.close()
        relay.stop()


def test_stop_closes_open_connections(make_relay, upstream_path, servers):
    servers.append(UnixServer(upstream_path, echo))
    relay = make_relay()
    with connect(relay) as client:
        client.sendall(b"a")
        assert client.recv(1) == b"a"
        relay.stop()
        assert read_all(client) == b""
