#!/usr/bin/env python3
"""Docker's health check of the supervisor container: the server answers GET /v1/health on its
Unix socket with ok. The standard library only, so a check every few seconds costs little."""

from __future__ import annotations

import json
import socket
import sys

from agentvisor.config import load_settings


def main() -> int:
    path = str(load_settings().socket_path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(4.0)
            conn.connect(path)
            conn.sendall(b"GET /v1/health HTTP/1.0\r\nHost: agentvisor\r\n\r\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        print(f"no answer on {path}: {exc}", file=sys.stderr)
        return 1
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    try:
        ok = status == [b"200"] and json.loads(body).get("ok") is True
    except ValueError:
        ok = False
    print(body.decode(errors="replace")[:500])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
