"""The scripted model for a dry run (`agentvisor up SPEC --model scripted[:SCRIPT]`): the real
Claude Code in every sandbox, the scripted model server (`agentvisor.testing.model_server`) on
the host's loopback as the project's model upstream, no key or login anywhere.

One model server process per project, started by `up` and `resume`, stopped by `down` and
`destroy`; its pid, address and script in `STATE/dry-run/PROJECT.json`, its log and every
request it answered beside it. The broker learns the address from the project's settings
(`model`), sends no credential there and names the agent in `x-agentvisor-agent`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agentvisor.config import Settings
from agentvisor.errors import InvalidInput
from agentvisor.testing.model_server import ScriptError, load_script

SCRIPTED = "scripted"
BUILT_IN = "dry-run"
START_TIMEOUT_S = 10.0
LISTENING = "model server listening on "


@dataclass(frozen=True)
class ScriptedModel:
    pid: int
    url: str
    script: str  # a file's absolute path, or "dry-run"


def parse_model(value: str | None) -> str | None:
    """The script of `--model scripted[:SCRIPT]` (`dry-run` for the built-in one), checked; None
    without `--model`. Anything else is refused: the real model needs no option."""
    if value is None:
        return None
    kind, _, script = value.partition(":")
    if kind != SCRIPTED:
        raise InvalidInput(
            f"--model {value!r}: the only choice is 'scripted' or 'scripted:SCRIPT.json' (the "
            "scripted model server, for a dry run); without --model the agents use the real "
            "model with the host's key or login"
        )
    if not script or script == BUILT_IN:
        return BUILT_IN
    path = Path(script).expanduser().resolve()
    try:
        load_script(path)
    except ScriptError as exc:
        raise InvalidInput(f"--model {value!r}: {exc}") from None
    return str(path)


def _folder(settings: Settings) -> Path:
    folder = settings.state_dir / "dry-run"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def _record(settings: Settings, project: str) -> Path:
    return _folder(settings) / f"{project}.json"


def requests_file(settings: Settings, project: str) -> Path:
    """Every request the project's scripted model answered, one JSON line each."""
    return _folder(settings) / f"{project}.requests.jsonl"


def current(settings: Settings, project: str) -> ScriptedModel | None:
    """The project's model server, when one is running."""
    try:
        data = json.loads(_record(settings, project).read_text(encoding="utf-8"))
        model = ScriptedModel(int(data["pid"]), str(data["url"]), str(data["script"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return model if _is_model_server(model.pid) else None


def start(settings: Settings, project: str, script: str) -> ScriptedModel:
    """Start the project's model server on a free loopback port (stopping an old one)."""
    stop(settings, project)
    log_path = _folder(settings) / f"{project}.log"
    command = [sys.executable, "-m", "agentvisor.testing.model_server", "--host", "127.0.0.1",
               "--port", "0", "--script", script,
               "--record", str(requests_file(settings, project))]  # fmt: skip
    with log_path.open("wb") as log:  # a new log: the address it prints is this one's
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the `up` that started it
            cwd="/",
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        url = _listening_url(log_path, process.pid)
        if url is not None:
            model = ScriptedModel(process.pid, url, script)
            _record(settings, project).write_text(json.dumps(asdict(model)), encoding="utf-8")
            return model
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
    raise InvalidInput(
        "the scripted model server did not start: "
        + (" / ".join(tail) or "no output")
        + f" (log: {log_path})"
    )


def stop(settings: Settings, project: str) -> bool:
    """Stop the project's model server; whether one was running."""
    model = current(settings, project)
    _record(settings, project).unlink(missing_ok=True)
    if model is None:
        return False
    try:
        os.kill(model.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _is_model_server(model.pid):
        time.sleep(0.05)
    return True


def _listening_url(log_path: Path, pid: int) -> str | None:
    """The address the server printed: `model server listening on URL` (its first line)."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    found = [line[len(LISTENING) :].strip() for line in lines if line.startswith(LISTENING)]
    return found[-1] if found and _is_model_server(pid) else None


def _is_model_server(pid: int) -> bool:
    """Whether `pid` is a scripted model server (not a process that took a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return status != "Z" and b"agentvisor.testing.model_server" in argv
