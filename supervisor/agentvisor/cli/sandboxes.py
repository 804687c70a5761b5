"""Operator commands on the sandboxes themselves: `ps`, `attach`, `logs`.

`register(app)` adds them to the `agentvisor` command line; each is one call into
`SandboxBackend` plus, for `ps`, the agents' heartbeats from the host API.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentvisor.cli.render import listing, visible
from agentvisor.client import ApiClient
from agentvisor.config import Settings, load_settings
from agentvisor.core.sandbox_status import health_of
from agentvisor.errors import SandboxError, ServerUnavailable

if TYPE_CHECKING:
    from agentvisor.sandbox.sandboxes import SandboxBackend

ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", "-p", help="Project name (optional when there is only one)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    app.command("ps")(ps)
    app.command("attach")(attach)
    app.command("logs")(logs)


def ps(ctx: typer.Context, project: ProjectOpt = None, json_out: JsonOpt = False) -> None:
    """The sandboxes: status, shim health, uptime, restarts, CPU and memory."""
    rows = sandbox_rows(_settings(ctx), project)
    listing(
        "sandboxes",
        ["project", "role", "status", "health", "uptime", "restarts", "cpu", "mem"],
        rows,
        lambda r: [
            r["project"],
            r["role"],
            r["status"],
            r["health"],
            duration(r["uptime_s"]),
            r["restarts"],
            "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.1f}%",
            "-" if r["memory_mb"] is None else f"{r['memory_mb']:.0f} MB",
        ],
        json_out,
    )


def attach(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help="The agent's role.")],
    project: ProjectOpt = None,
) -> None:
    """Attach this terminal to the agent's tmux pane (detach with Ctrl-b d)."""
    from agentvisor.sandbox.sandboxes import SandboxBackend

    backend = SandboxBackend(_settings(ctx))
    argv = backend.exec_tty_argv(project_of(backend, project, role), role)
    print("attaching; detach with Ctrl-b d", file=sys.stderr, flush=True)
    os.execvp(argv[0], argv)


def logs(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help="The agent's role.")],
    project: ProjectOpt = None,
    lines: Annotated[
        int,
        typer.Option("--lines", "-n", min=0, help="Last lines to print; 0 = the whole scrollback."),
    ] = 200,
) -> None:
    """Print the last lines of the agent's pane, scrollback included (control characters
    made visible)."""
    from agentvisor.sandbox.sandboxes import SandboxBackend

    backend = SandboxBackend(_settings(ctx))
    text = backend.pane_history(project_of(backend, project, role), role, lines)
    sys.stdout.write(visible(text, keep_lines=True))


def sandbox_rows(
    settings: Settings, project: str | None = None, now: float | None = None
) -> list[dict[str, Any]]:
    """One row per sandbox of this state dir, as `ps --json` prints them."""
    from agentvisor.sandbox.sandboxes import SandboxBackend

    backend = SandboxBackend(settings)
    infos = backend.list(project)
    stats = backend.stats(project) if infos else {}
    agents = _agents(settings) if infos else {}
    now = time.time() if now is None else now
    rows = []
    for info in infos:
        usage = stats.get((info.project, info.role))
        running = info.status == "running"
        if not running:
            health = "-"
        elif agents is None:
            health = "unknown (server down)"
        else:
            agent = agents.get((info.project, info.role), {})
            health = health_of(agent, now, settings.heartbeat_timeout_s, info.started_at)
        rows.append(
            {
                "project": info.project,
                "role": info.role,
                "status": info.status,
                "health": health,
                "uptime_s": now - info.started_at if running and info.started_at else None,
                "restarts": info.restart_count,
                "cpu_percent": usage.cpu_percent if usage else None,
                "memory_mb": usage.memory_mb if usage else None,
                "container": info.name,
                "image": info.image,
            }
        )
    return rows


def project_of(backend: SandboxBackend, project: str | None, role: str) -> str:
    """The project given, or the only one with a sandbox for `role`."""
    if project:
        return project
    projects = sorted({i.project for i in backend.list() if i.role == role})
    if len(projects) == 1:
        return projects[0]
    if not projects:
        raise SandboxError(
            f"no sandbox for the role {role}; see 'agentvisor ps' for the roles that have one"
        )
    raise SandboxError(
        f"several projects have a sandbox for {role} ({', '.join(projects)}); pass --project"
    )


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _agents(settings: Settings) -> dict[tuple[str, str], dict[str, Any]] | None:
    """The agents' rows by (project, role); None when the server is not running."""
    try:
        with ApiClient(settings) as client:
            names = {p["id"]: p["name"] for p in client.get("/v1/projects")}
            rows = client.get("/v1/agents")
    except ServerUnavailable:
        return None
    return {(names.get(r["project_id"], ""), r["role"]): r for r in rows}


def _settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    settings = getattr(obj, "settings", None)
    if isinstance(settings, Settings):
        return settings
    return load_settings(getattr(obj, "state", None))
