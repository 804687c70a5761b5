"""A hostile agent, run inside its sandbox (`python3 - SECONDS CONNECTIONS FLOODERS`): opens
as many idle connections to the API socket as it can, up to CONNECTIONS, over and over, while
FLOODERS threads send requests with its token as fast as they can. Prints what it did as one
JSON line. Standard library only: the sandbox image has nothing else for it."""

from __future__ import annotations

import json
import os
import resource
import socket
import sys
import threading
import time

SOCKET = os.environ.get("AGENTVISOR_SOCKET", "/run/agentvisor/sock/api.sock")
with open(os.environ.get("AGENTVISOR_TOKEN_FILE", "/run/agentvisor/token")) as token_file:
    TOKEN = token_file.read().strip()
seconds, connections, flooders = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
kinds = sys.argv[4] if len(sys.argv) > 4 else "cmi"  # c: GET checkins, m: POST message, i: inbox
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
stop = time.monotonic() + seconds
lock = threading.Lock()
stats: dict = {
    "fd_limit": hard,
    "opened": 0,
    "most_held": 0,
    "rounds": 0,
    "requests": 0,
    "answers": {},
    "connect_errors": {},
}


def count(name: str, key: str) -> None:
    with lock:
        stats[name][key] = stats[name].get(key, 0) + 1


def hold() -> None:
    held: list[socket.socket] = []
    while time.monotonic() < stop:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as error:  # out of descriptors: let them all go and start again
            count("connect_errors", type(error).__name__)
            sock = None
        if sock is not None:
            try:
                sock.settimeout(5)
                sock.connect(SOCKET)
                held.append(sock)
                with lock:
                    stats["opened"] += 1
            except OSError as error:
                count("connect_errors", type(error).__name__)
                sock.close()
        if sock is None or len(held) >= connections:
            with lock:
                stats["most_held"] = max(stats["most_held"], len(held))
                stats["rounds"] += 1
            for each in held:
                each.close()
            held = []
    with lock:
        stats["most_held"] = max(stats["most_held"], len(held))


ALL_REQUESTS = [
    b"GET /v1/checkins HTTP/1.1\r\nhost: a\r\nauthorization: Bearer %s\r\n\r\n",
    b"POST /v1/messages HTTP/1.1\r\nhost: a\r\nauthorization: Bearer %s\r\n"
    b"content-type: application/json\r\ncontent-length: 36\r\n\r\n"
    b'{"to": "attacker", "body": "flood!"}',
    b"GET /v1/inbox HTTP/1.1\r\nhost: a\r\nauthorization: Bearer %s\r\n\r\n",
]
REQUESTS = [r for r, k in zip(ALL_REQUESTS, "cmi", strict=True) if k in kinds]


def read_answer(sock: socket.socket, buffer: bytes) -> tuple[str, bytes]:
    while b"\r\n\r\n" not in buffer:
        more = sock.recv(65536)
        if not more:
            raise ConnectionError("closed")
        buffer += more
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode()
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        more = sock.recv(65536)
        if not more:
            break
        rest += more
    return status, rest[length:]


def flood(index: int) -> None:
    n = index
    while time.monotonic() < stop:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(SOCKET)
        except OSError as error:
            count("connect_errors", type(error).__name__)
            continue
        buffer = b""
        try:
            while time.monotonic() < stop:
                sock.sendall(REQUESTS[n % len(REQUESTS)] % TOKEN.encode())
                n += 1
                status, buffer = read_answer(sock, buffer)
                count("answers", status)
                with lock:
                    stats["requests"] += 1
        except (OSError, ConnectionError, ValueError, IndexError):
            pass
        finally:
            sock.close()


threads = [threading.Thread(target=hold)] * (connections > 0) + [
    threading.Thread(target=flood, args=(i,)) for i in range(flooders)
]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(stats))
