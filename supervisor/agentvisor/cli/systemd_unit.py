"""`agentvisor service install`: the server as a systemd service that starts at boot (or at
login, `--user`) and comes back when it fails, as the old tool's daemons did.

`render_unit` is pure; `install`, `uninstall` and `status` write the unit file and call
`systemctl`. On a host without systemd, `docker compose` (docs/guides/compose.md) or
`agentvisor serve --detach` from a boot script do the same job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from agentvisor.config import Settings
from agentvisor.errors import InvalidInput

DEFAULT_NAME = "agentvisor"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")


@dataclass(frozen=True)
class UnitPlan:
    name: str  # without .service
    path: Path
    user_mode: bool  # a `systemctl --user` unit
    text: str


def unit_dir(user_mode: bool, home: Path | None = None) -> Path:
    if not user_mode:
        return SYSTEM_UNIT_DIR
    config = os.environ.get("XDG_CONFIG_HOME") or str((home or Path.home()) / ".config")
    return Path(config) / "systemd" / "user"


def render_unit(
    settings: Settings,
    *,
    python: str,
    user_mode: bool,
    run_as: str | None = None,
    port: int | None = None,
    path_env: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
) -> str:
    """The unit's text: `agentvisor serve` in the foreground, on `settings.state_dir`, its
    output appended to the server log, restarted 5 s after it fails."""
    state = settings.state_dir
    serve = [python, "-m", "agentvisor", "--state", str(state), "serve"]
    if port:
        serve += ["--port", str(port)]
    lines = [
        "# Written by `agentvisor service install`; `agentvisor service uninstall` removes it.",
        "[Unit]",
        f"Description=agentvisor server ({state})",
        "After=network-online.target docker.service",
        *([] if user_mode else ["Wants=docker.service"]),
        "StartLimitIntervalSec=300",
        "StartLimitBurst=10",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(_quoted(arg) for arg in serve),
        *([f"User={run_as}"] if run_as and not user_mode else []),
        f"WorkingDirectory={_quoted(str(state))}",
        "Environment=" + _quoted(f"PATH={path_env}"),
        "Environment=PYTHONUNBUFFERED=1",
        f"StandardOutput=append:{settings.log_path}",
        f"StandardError=append:{settings.log_path}",
        "Restart=on-failure",
        "RestartSec=5",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
        "",
        "[Install]",
        f"WantedBy={'default.target' if user_mode else 'multi-user.target'}",
        "",
    ]
    return "\n".join(lines)


def _quoted(arg: str) -> str:
    """An ExecStart argument: systemd splits on spaces and reads quotes and backslashes."""
    if arg and all(c.isalnum() or c in "/._-+=:@%" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plan_unit(
    settings: Settings,
    *,
    user_mode: bool,
    name: str = DEFAULT_NAME,
    directory: Path | None = None,
    port: int | None = None,
) -> UnitPlan:
    if not name or not all(c.isalnum() or c in "-_@." for c in name):
        raise InvalidInput(f"unit name {name!r}: use letters, digits, '-', '_' or '.'")
    run_as = os.environ.get("SUDO_USER") if os.geteuid() == 0 and not user_mode else None
    folder = directory or unit_dir(user_mode)
    text = render_unit(
        settings, python=sys.executable, user_mode=user_mode, run_as=run_as, port=port,
        path_env=os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
    )  # fmt: skip
    return UnitPlan(name, folder / f"{name}.service", user_mode, text)


def systemd_running() -> bool:
    """Whether this host booted with systemd (what `systemctl` needs to do anything)."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def write_unit(plan: UnitPlan) -> None:
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    temporary = plan.path.with_suffix(".service.tmp")
    temporary.write_text(plan.text, encoding="utf-8")
    temporary.chmod(0o644)
    temporary.replace(plan.path)


def systemctl(plan: UnitPlan, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["systemctl", *(["--user"] if plan.user_mode else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def verify(path: Path) -> str | None:
    """`systemd-analyze verify`'s complaint about the unit file, or None when it has none (or
    when systemd-analyze is not installed)."""
    if shutil.which("systemd-analyze") is None:
        return None
    done = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    return "; ".join(problems) if done.returncode != 0 or problems else None
