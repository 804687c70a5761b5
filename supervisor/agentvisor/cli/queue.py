"""Queue commands of the CLI: `agentvisor queue add|list|status|cancel`."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated, Any

import typer

from agentvisor.cli.render import console, print_json, short, table, when
from agentvisor.client import ApiClient
from agentvisor.config import load_settings
from agentvisor.errors import InvalidInput

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
queue_app = typer.Typer(
    no_args_is_help=True,
    help="The project queue: specs run one after "
    "another (or --concurrency N at once), failures retried.",
)


def expand_specs(items: list[str]) -> list[Path]:
    """Spec files from paths, folders (their *.md files) and globs, in a stable order."""
    found: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.glob("*.md") if p.is_file())
        elif any(ch in item for ch in "*?["):
            found += sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        else:
            found.append(path)
    if not found:
        raise InvalidInput(f"no spec files found in {', '.join(items)}")
    unique: list[Path] = []
    for path in found:
        if path.resolve() not in [p.resolve() for p in unique]:
            unique.append(path)
    return unique


def add_to_queue(
    state: Path | None, specs: list[Path], project_dir: Path | None, options: dict[str, Any]
) -> list[dict[str, Any]]:
    with ApiClient(load_settings(state)) as client:
        return [
            client.post(
                "/v1/queue",
                {
                    "spec_path": str(spec.resolve()),
                    "project_dir": str(project_dir.resolve()) if project_dir else None,
                    "options": options,
                },
            )
            for spec in specs
        ]


def show(rows: list[dict[str, Any]]) -> None:
    table(
        "queue",
        ["id", "state", "attempts", "project", "spec", "started", "last error"],
        (
            [
                r["id"],
                r["state"],
                f"{r['attempts']}/{r['max_attempts']}",
                r["project"],
                r["spec_path"],
                when(r["started_at"]),
                short(r["last_error"], 50),
            ]
            for r in rows
        ),
    )


@queue_app.command("add")
def add(
    ctx: typer.Context,
    specs: list[str],
    project: Annotated[
        Path | None, typer.Option("--project", help="The project's git repository.")
    ] = None,
    new_project: Annotated[bool, typer.Option("--new-project")] = False,
    roles: Annotated[str | None, typer.Option("--roles")] = None,
    agent: Annotated[str | None, typer.Option("--agent")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Queue one or more specs (files, folders of *.md, or globs)."""
    options = {
        "new_project": new_project,
        "agent": agent,
        "roles": [r.strip() for r in roles.split(",")] if roles else None,
    }
    rows = add_to_queue(ctx.obj.state, expand_specs(specs), project, options)
    if json_out:
        print_json(rows)
    else:
        show(rows)


@queue_app.command("list")
def list_cmd(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option("--state")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Every queue entry with its state."""
    with ApiClient(load_settings(ctx.obj.state)) as client:
        rows = client.get("/v1/queue", state=state)
    if json_out:
        print_json(rows)
    else:
        show(rows)


@queue_app.command("status")
def status(ctx: typer.Context, queue_id: int, json_out: JsonOpt = False) -> None:
    """One queue entry in full."""
    with ApiClient(load_settings(ctx.obj.state)) as client:
        row = client.get(f"/v1/queue/{queue_id}")
    if json_out:
        print_json(row)
        return
    for key in (
        "id",
        "state",
        "attempts",
        "max_attempts",
        "project",
        "spec_path",
        "current_spec",
        "last_error",
    ):
        console.print(f"{key}: {row[key]}", markup=False, highlight=False)
    for key in ("created_at", "started_at", "deadline_at", "finished_at", "escalated_at"):
        console.print(f"{key}: {when(row[key])}")


@queue_app.command("cancel")
def cancel(ctx: typer.Context, queue_id: int) -> None:
    """Cancel a queued or running entry (a running project's sandboxes keep running)."""
    with ApiClient(load_settings(ctx.obj.state)) as client:
        row = client.delete(f"/v1/queue/{queue_id}")
    console.print(f"queue entry {row['id']}: {row['state']}")


def register(app: typer.Typer) -> None:
    app.add_typer(queue_app, name="queue")
