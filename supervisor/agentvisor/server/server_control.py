"""Starting, finding and stopping the server process, apart from the server itself: the CLI
imports this without FastAPI or uvicorn (`agentvisor send` starts in a fraction of a second)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from agentvisor.config import Settings
from agentvisor.errors import ServerUnavailable


def read_pid(settings: Settings) -> int | None:
    try:
        return int(settings.pid_path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def is_running(settings: Settings) -> bool:
    """True when a server answers on the socket."""
    if not settings.socket_path.exists():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(settings.socket_path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def start_detached(
    settings: Settings, extra_args: list[str] | None = None, timeout_s: float = 20.0
) -> int:
    """Start `agentvisor serve` in the background; return its pid once it answers HTTP on its
    socket (and on its TCP port, if it has one), else ServerUnavailable with the cause in one
    line. A server already answering for this state dir is returned as it is."""
    if is_running(settings):
        pid = read_pid(settings)
        return pid or 0
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(settings.log_path, "ab")  # noqa: SIM115
    except OSError as exc:
        raise ServerUnavailable(
            f"cannot write the server's log in {settings.state_dir}: {exc.strerror or exc}"
        ) from None
    args = [
        sys.executable,
        "-m",
        "agentvisor",
        "--state",
        str(settings.state_dir),
        "serve",
        *(extra_args or []),
    ]
    start = log_file.tell()
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=log_file,
        start_new_session=True,
        close_fds=True,
    )
    log_file.close()
    port = _port_of(extra_args) or settings.tcp_port
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            why = _last_error(settings.log_path, start)
            if why == "no output" and _free_bytes(settings.state_dir) < LOW_DISK_BYTES:
                # A full disk also takes the log the cause would have been written to.
                why = (
                    f"the disk holding {settings.state_dir} is full "
                    f"({_free_bytes(settings.state_dir)} bytes free); free space and retry"
                )
            raise ServerUnavailable(
                f"the server did not start: {why} (exit {proc.returncode}; log {settings.log_path})"
            )
        if answers_http(settings, port) and read_pid(settings) == proc.pid:
            return proc.pid
        time.sleep(0.05)
    raise ServerUnavailable(
        f"the server did not answer within {timeout_s:.0f} s; see {settings.log_path}"
    )


def answers_http(settings: Settings, port: int | None = None) -> bool:
    """Whether a server answers HTTP on the socket (and on `port` of the loopback)."""
    import httpx

    targets = [(httpx.HTTPTransport(uds=str(settings.socket_path)), "http://agentvisor")]
    if port:
        targets.append((httpx.HTTPTransport(), f"http://{settings.tcp_host}:{port}"))
    for transport, base in targets:
        try:
            with httpx.Client(transport=transport, base_url=base, timeout=2.0) as client:
                client.get("/v1/whoami")  # any answer, a 401 too, is a server serving
        except httpx.HTTPError:
            return False
    return True


def _port_of(args: list[str] | None) -> int | None:
    args = args or []
    if "--port" in args[:-1]:
        value = args[args.index("--port") + 1]
        return int(value) if value.isdigit() else None
    return None


LOW_DISK_BYTES = 1024 * 1024


def _free_bytes(path: Path) -> int:
    try:
        stats = os.statvfs(path)
    except OSError:
        return LOW_DISK_BYTES  # cannot tell: not "full"
    return stats.f_bavail * stats.f_frsize


def _last_error(log_path: Path, since: int) -> str:
    """The line of the server's log (from `since`) that says why it stopped."""
    try:
        with log_path.open("rb") as log:
            log.seek(since)
            lines = log.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "no log"
    lines = [line.strip() for line in lines if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1]


def stop_server(settings: Settings, timeout_s: float = 10.0) -> bool:
    """SIGTERM the detached server and wait for it to go. False when none was running."""
    pid = read_pid(settings)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def _alive(pid: int) -> bool:
    """Whether `pid` still runs; reaps it when it is our own exited child (a zombie would
    otherwise look alive)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child: its parent reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
