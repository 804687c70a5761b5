"""Moving a proxied connection's bytes: non-blocking sockets in the event loop (`Conn`), and
tunnels spliced in the kernel through a pipe, one thread per direction (`splice`), so that a
download through the proxy runs near loopback speed."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import socket
import time
from typing import Protocol

CHUNK = 256 * 1024
PIPE_BYTES = 1024 * 1024  # a tunnel's pipe, per direction (the default is 64 KiB)
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, which Python has from 3.10 on Linux only
POLL_S = 1.0
# What the Unix socket to the shim's relay may queue of a download: as much as the pipe holds
# (the kernel caps it at net.core.wmem_max). Its default, 208 KiB, woke the splicing thread
# five times per pipeful and cost it half as much CPU again.
SOCKET_BYTES = PIPE_BYTES


class Progress(Protocol):
    """What a tunnel counts: bytes each way and when it last moved any."""

    bytes_up: int
    bytes_down: int
    last_active: float


class Conn:
    """A non-blocking socket in the event loop; a read or write that makes no progress for
    `idle_s` raises TimeoutError (a peer that stalls holds its connection no longer)."""

    def __init__(self, sock: socket.socket, idle_s: float) -> None:
        self.sock = sock
        self.idle_s = idle_s
        self._loop = asyncio.get_running_loop()

    async def recv(self) -> bytes:
        return await asyncio.wait_for(self._loop.sock_recv(self.sock, CHUNK), self.idle_s)

    async def send(self, data: bytes) -> None:
        if data:
            await asyncio.wait_for(self._loop.sock_sendall(self.sock, data), self.idle_s)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def widen(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BYTES)


def shut(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def splice(
    src: socket.socket, dst: socket.socket, request: Progress, up: bool, idle_s: float
) -> None:
    """Move bytes from `src` to `dst` through a pipe in the kernel until `src` ends (then pass
    the EOF on), both are shut, or the tunnel was idle both ways for `idle_s`. Runs in a
    thread; raises OSError when a side fails."""
    src_fd, dst_fd = src.fileno(), dst.fileno()
    pipe_r, pipe_w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe_w, F_SETPIPE_SZ, PIPE_BYTES)
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    readable, writable = select.poll(), select.poll()
    readable.register(src_fd, select.POLLIN)
    writable.register(dst_fd, select.POLLOUT)
    try:
        while True:
            # Splice first, wait only when nothing is there: a poll per chunk would double
            # the system calls of a download.
            try:
                moved = os.splice(src_fd, pipe_w, PIPE_BYTES, flags=flags)
            except BlockingIOError:
                if not readable.poll(POLL_S * 1000) and (
                    time.monotonic() - request.last_active >= idle_s
                ):
                    raise TimeoutError(f"idle for {idle_s:.0f} s") from None
                continue
            if moved == 0:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            request.last_active = time.monotonic()
            if up:
                request.bytes_up += moved
            else:
                request.bytes_down += moved
            while moved:
                try:
                    moved -= os.splice(pipe_r, dst_fd, moved, flags=flags)
                except BlockingIOError:
                    if not writable.poll(POLL_S * 1000) and (
                        time.monotonic() - request.last_active >= idle_s
                    ):
                        raise TimeoutError(f"idle for {idle_s:.0f} s") from None
    finally:
        os.close(pipe_r)
        os.close(pipe_w)
