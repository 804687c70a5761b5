"""The `agentvisor` command line: a thin skin over the host API and the package's functions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from agentvisor import __version__
from agentvisor.cli.args import (
    ClickException,
    NoArgsIsHelpError,
    UsageError,
    finite_float,
    undecodable_argument,
)
from agentvisor.cli.render import console, err_console, listing, print_json, short, when
from agentvisor.client import ApiClient
from agentvisor.config import Settings, load_settings
from agentvisor.errors import AgentvisorError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help="agentvisor: run teams of AI coding agents, each in its own sandbox.",
)

StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state", help="State directory (default ~/.local/state/agentvisor, or $AGENTVISOR_STATE)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", "-p", help="Project name (optional when there is only one)."),
]


class Context:
    def __init__(self, state: Path | None) -> None:
        self.state = state
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.state)
        return self._settings

    def client(self) -> ApiClient:
        return ApiClient(self.settings)


def ctx_of(ctx: typer.Context) -> Context:
    context: Context = ctx.obj
    return context


def _print_version(wanted: bool) -> None:
    if wanted:
        print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    state: StateOpt = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,  # before the command is looked for: `agentvisor --version` alone
        ),
    ] = False,
) -> None:
    ctx.obj = Context(state)


# -- the server -------------------------------------------------------------------------------
@app.command()
def serve(
    ctx: typer.Context,
    detach: Annotated[
        bool,
        typer.Option("--detach", help="Run in the background (pid file and log in the state dir)."),
    ] = False,
    port: Annotated[
        int | None, typer.Option("--port", help="Also listen on this loopback TCP port.")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", help="Queued projects run at once.")
    ] = None,
) -> None:
    """Run the server: the schedule, the host API and the project queue."""
    settings = load_settings(ctx_of(ctx).state, tcp_port=port, queue_concurrency=concurrency)
    if detach:
        from agentvisor.server import server_control

        extra = ["--port", str(port)] if port else []
        extra += ["--concurrency", str(concurrency)] if concurrency else []
        pid = server_control.start_detached(settings, extra)
        console.print(
            f"agentvisor server running (pid {pid}); socket {settings.socket_path}, "
            f"log {settings.log_path}"
        )
        return
    console.print(
        f"agentvisor server on {settings.socket_path}"
        + (f" and http://{settings.tcp_host}:{port}" if port else "")
    )
    from agentvisor.launch import launch_queued
    from agentvisor.server import server

    server.serve(settings, launcher=launch_queued)


@app.command()
def doctor(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Check what agentvisor needs: tools, Docker, images, disk, the server."""
    from agentvisor.server.doctor import run_checks

    checks = run_checks(ctx_of(ctx).settings)
    if json_out:
        print_json([vars(c) for c in checks])
    else:
        for check in checks:
            mark = "ok  " if check.ok else "FAIL"
            console.print(f"{mark} {check.name:<7} {check.detail}", markup=False, highlight=False)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command("stop-server")
def stop_server(ctx: typer.Context) -> None:
    """Stop the background server (sandboxes keep running)."""
    from agentvisor.server import server_control

    stopped = server_control.stop_server(ctx_of(ctx).settings)
    console.print("server stopped" if stopped else "no server was running")


@app.command()
def health(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Ask the server how it is."""
    with ctx_of(ctx).client() as client:
        result = client.get("/v1/health")
    if json_out:
        print_json(result)
    else:
        for key, value in result.items():
            console.print(f"{key}: {value}")
    if not result.get("ok"):
        raise typer.Exit(1)


# -- messages and check-ins -------------------------------------------------------------------
@app.command()
def send(
    ctx: typer.Context,
    role: str,
    message: str,
    project: ProjectOpt = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key", help="Idempotency key: sending again with the same key does nothing."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Send MESSAGE to the agent ROLE ('-' reads the message from stdin)."""
    body = _stdin_text() if message == "-" else message
    with ctx_of(ctx).client() as client:
        result = client.post(
            "/v1/messages", {"to": role, "body": body, "project": project, "idempotency_key": key}
        )
    if json_out:
        print_json(result)
    else:
        console.print(f"message {result['id']} to {role}: {result['state']}")


@app.command()
def schedule(
    ctx: typer.Context,
    minutes: Annotated[float, typer.Argument(parser=finite_float)],
    note: str,
    to: Annotated[str, typer.Option("--to", help="Role the check-in is for.")] = "orchestrator",
    every: Annotated[
        float | None,
        typer.Option("--every", help="Repeat every N minutes.", parser=finite_float),
    ] = None,
    project: ProjectOpt = None,
    key: Annotated[str | None, typer.Option("--key", help="Idempotency key.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Schedule a check-in NOTE for an agent in MINUTES."""
    with ctx_of(ctx).client() as client:
        result = client.post(
            "/v1/checkins",
            {
                "minutes": minutes,
                "note": note,
                "to": to,
                "every_minutes": every,
                "project": project,
                "idempotency_key": key,
            },
        )
    if json_out:
        print_json(result)
    else:
        repeat = f", every {every:g} min" if every else ""
        console.print(f"check-in {result['id']} for {to} at {when(result['due_at'])}{repeat}")


@app.command()
def checkins(
    ctx: typer.Context,
    project: ProjectOpt = None,
    cancel: Annotated[
        int | None, typer.Option("--cancel", help="Cancel the check-in with this id.")
    ] = None,
    all_states: Annotated[
        bool, typer.Option("--all", help="Include fired and cancelled ones.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """List pending check-ins, or cancel one."""
    with ctx_of(ctx).client() as client:
        if cancel is not None:
            result = client.delete(f"/v1/checkins/{cancel}")
            if json_out:
                print_json(result)
            else:
                console.print(f"check-in {cancel} cancelled")
            return
        rows = client.get("/v1/checkins", project=project, state="all" if all_states else None)
        failed = [] if all_states else client.get("/v1/checkins", project=project, state="failed")
        roles = _role_names(client)
    listing(
        "check-ins",
        ["id", "for", "by", "due", "every", "state", "fired", "note"],
        rows,
        lambda r: [
            r["id"],
            roles.get(r["recipient_id"], r["recipient_id"]),
            r.get("creator"),
            when(r["due_at"]),
            f"{r['every_s'] / 60:g} min" if r["every_s"] else "",
            r["state"],
            r["fired_count"],
            short(r["note"]),
        ],
        json_out,
    )
    if failed and not json_out:
        from agentvisor.cli.project import failed_checkins_line

        err_console.print(failed_checkins_line(len(failed)), markup=False, highlight=False)


@app.command()
def messages(
    ctx: typer.Context,
    project: ProjectOpt = None,
    to: Annotated[str | None, typer.Option("--to", help="Only messages for this role.")] = None,
    state: Annotated[str | None, typer.Option("--state", help="Only this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 30,
    retry: Annotated[
        int | None, typer.Option("--retry", help="Queue this failed message again.")
    ] = None,
    cancel: Annotated[
        int | None, typer.Option("--cancel", help="Cancel this queued message.")
    ] = None,
    audit: Annotated[
        bool,
        typer.Option(
            "--audit", help="Who said what to whom, and who got a copy (from the event log)."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Recent messages with their delivery states."""
    if audit:
        _audit(ctx, project, limit, json_out)
        return
    with ctx_of(ctx).client() as client:
        for message_id, action in ((retry, "retry"), (cancel, "cancel")):
            if message_id is not None:
                result = client.post(f"/v1/messages/{message_id}/action", {"action": action})
                console.print(f"message {message_id}: {result['state']}")
                return
        rows = client.get("/v1/messages", project=project, recipient=to, state=state, limit=limit)
        roles = _role_names(client)
    listing(
        "messages",
        ["id", "from", "to", "kind", "state", "tries", "created", "body"],
        rows,
        lambda r: [
            r["id"],
            r["sender"],
            roles.get(r["recipient_id"], r["recipient_id"]),
            r["kind"],
            r["state"] + (f" ({short(r['last_error'], 30)})" if r["last_error"] else ""),
            r["attempts"],
            when(r["created_at"]),
            short(r["body"]),
        ],
        json_out,
    )


def _audit(ctx: typer.Context, project: str | None, limit: int, json_out: bool) -> None:
    with ctx_of(ctx).client() as client:
        events = client.get("/v1/events", project=project, limit=500)
    sent = [e for e in events if e["kind"] == "message.sent"][:limit]
    listing(
        "messages sent, newest first",
        ["at", "message", "from", "to", "kind", "copied to"],
        sent,
        lambda e: [
            when(e["at"]),
            e["data"].get("id"),
            e["data"].get("from"),
            e["data"].get("to"),
            e["data"].get("kind"),
            ", ".join(e["data"].get("copied_to") or []),
        ],
        json_out,
    )


@app.command()
def routing(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Argument()] = None,
    copy_to: Annotated[
        str | None, typer.Option("--copy-to", help="The role that gets the copies.")
    ] = None,
    copy_kind: Annotated[
        list[str] | None,
        typer.Option("--copy-kind", help="Copy messages of this kind (repeatable; replaces)."),
    ] = None,
    copy_pattern: Annotated[
        list[str] | None,
        typer.Option("--copy-pattern", help="Copy messages holding this text (repeatable)."),
    ] = None,
    hub_only: Annotated[
        bool | None,
        typer.Option("--hub-only/--no-hub-only", help="Agents may message only the hub."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """The project's routing: copies of critical messages to the orchestrator, strict hub-spoke."""
    changes: dict[str, Any] = {}
    if copy_to is not None:
        changes["copy_to"] = copy_to
    if copy_kind is not None:
        changes["copy_kinds"] = [k for k in copy_kind if k]
    if copy_pattern is not None:
        changes["copy_patterns"] = [p for p in copy_pattern if p]
    if hub_only is not None:
        changes["hub_only"] = hub_only
    from agentvisor.launch import resolve_project

    with ctx_of(ctx).client() as client:
        name = project or resolve_project(client, None)["name"]
        path = f"/v1/projects/{name}/routing"
        policy = client.post(path, changes) if changes else client.get(path)
    if json_out:
        print_json(policy)
        return
    console.print(f"routing of {policy['project']}:")
    console.print(f"  copies of messages between agents go to: {policy['copy_to']}")
    console.print(f"  when their kind is: {', '.join(policy['copy_kinds']) or '(none)'}")
    console.print(f"  or they hold: {', '.join(policy['copy_patterns']) or '(none)'}")
    hub = "yes: agents message only the hub" if policy["hub_only"] else "no"
    console.print(f"  strict hub-spoke: {hub}")


@app.command()
def agents(ctx: typer.Context, project: ProjectOpt = None, json_out: JsonOpt = False) -> None:
    """Agents known to the server."""
    with ctx_of(ctx).client() as client:
        rows = client.get("/v1/agents", project=project)
        projects = {p["id"]: p["name"] for p in client.get("/v1/projects")}
    listing(
        "agents",
        ["id", "project", "role", "profile", "state", "last seen"],
        rows,
        lambda r: [
            r["id"],
            projects.get(r["project_id"]),
            r["role"],
            r["profile"],
            r["state"],
            when(r["last_seen_at"]),
        ],
        json_out,
    )


@app.command()
def projects(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Projects known to the server."""
    with ctx_of(ctx).client() as client:
        rows = client.get("/v1/projects")
    listing(
        "projects",
        ["id", "name", "state", "path", "start branch"],
        rows,
        lambda r: [r["id"], r["name"], r["state"], r["path"], r["start_branch"]],
        json_out,
    )


@app.command()
def events(
    ctx: typer.Context,
    project: ProjectOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 30,
    json_out: JsonOpt = False,
) -> None:
    """The event log, newest first."""
    with ctx_of(ctx).client() as client:
        rows = client.get("/v1/events", project=project, limit=limit)
    listing(
        "events",
        ["id", "at", "kind", "data"],
        rows,
        lambda r: [r["id"], when(r["at"]), r["kind"], short(str(r["data"]), 80)],
        json_out,
    )


def _register_more() -> None:
    from agentvisor.cli import (
        drills as cli_drills,
    )
    from agentvisor.cli import (
        egress as cli_egress,
    )
    from agentvisor.cli import (
        git as cli_git,
    )
    from agentvisor.cli import (
        images as cli_images,
    )
    from agentvisor.cli import (
        project as cli_project,
    )
    from agentvisor.cli import (
        queue as cli_queue,
    )
    from agentvisor.cli import (
        service as cli_service,
    )
    from agentvisor.cli import (
        usage as cli_usage,
    )

    cli_project.register(app)
    cli_egress.register(app)
    cli_git.register(app)
    cli_images.register(app)
    cli_queue.register(app)
    cli_usage.register(app)
    cli_service.register(app)
    cli_drills.register(app)
    try:
        from agentvisor.cli import sandboxes as cli_sandboxes
    except ImportError:  # the container backend is optional for the CLI to load
        return
    cli_sandboxes.register(app)


_register_more()


def _stdin_text() -> str:
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AgentvisorError(
            f"the message on stdin is not valid UTF-8 (byte {exc.start}); send UTF-8 text"
        ) from None


def _role_names(client: ApiClient) -> dict[int, str]:
    return {a["id"]: a["role"] for a in client.get("/v1/agents")}


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Whatever is wrong with the input (a bad argument, text that is not
    UTF-8, a domain error) is one line on stderr and a non-zero exit, never a traceback."""
    bad = undecodable_argument(sys.argv[1:] if argv is None else argv)
    if bad is not None:
        _fail(
            f"argument {bad + 1} of the command line is not valid UTF-8; agentvisor takes "
            "UTF-8 text (check the terminal's locale)",
            2,
        )
    try:
        result = app(args=argv, standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(exc.format_message() + where, exc.exit_code)
    except ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _fail("aborted", 1)
    except AgentvisorError as exc:
        _fail(exc.message, 1)
    raise SystemExit(result if isinstance(result, int) else 0)


def _fail(message: str, code: int) -> NoReturn:
    one_line = " ".join(message.split())
    err_console.print(f"error: {one_line}", markup=False, highlight=False)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
