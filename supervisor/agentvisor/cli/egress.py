"""`agentvisor egress`: what the agents asked the egress proxy for, and the operator's
allowlist of each project (docs/guides/network.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agentvisor.cli.render import console, listing, visible, when
from agentvisor.client import ApiClient
from agentvisor.config import load_settings
from agentvisor.errors import InvalidInput

ACTIONS = ("allow", "deny", "list")
USAGE = (
    "agentvisor egress [PROJECT] [--denied] [--json] | egress allow PROJECT HOST[:PORT]... | "
    "egress deny PROJECT HOST[:PORT]... | egress list PROJECT [--json]"
)


def register(app: typer.Typer) -> None:
    @app.command(help=f"Egress requests (newest first) and allowlists. Usage: {USAGE}")
    def egress(
        ctx: typer.Context,
        words: Annotated[
            list[str] | None, typer.Argument(metavar="[ACTION] [PROJECT] [ENTRY]...")
        ] = None,
        denied: Annotated[bool, typer.Option("--denied", help="Only refused requests.")] = False,
        limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
        json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        args = list(words or [])
        with ApiClient(load_settings(ctx.obj.state)) as client:
            if args and args[0] in ACTIONS:
                action, rest = args[0], args[1:]
                if not rest or (action != "list" and len(rest) < 2):
                    raise InvalidInput(f"usage: {USAGE}")
                change(client, action, rest[0], rest[1:], json_out)
            elif len(args) > 1:
                raise InvalidInput(f"usage: {USAGE}")
            else:
                show_requests(client, args[0] if args else None, denied, limit, json_out)


def change(
    client: ApiClient, action: str, project: str, entries: list[str], json_out: bool
) -> None:
    for entry in entries:
        if action == "allow":
            row = client.post("/v1/egress/rules", {"project": project, "entry": entry})
            console.print(f"{project}: {row['entry']} allowed", markup=False, highlight=False)
        else:
            row = client.request(
                "DELETE", "/v1/egress/rules", params={"project": project, "entry": entry}
            )
            console.print(f"{project}: {row['entry']} no longer allowed", markup=False)
    rows = client.get("/v1/egress/rules", project=project)
    if action == "list" or json_out:
        listing(f"egress allowlist of {project}", ["entry", "set by"], rows,
                lambda r: [r["entry"], r["origin"]], json_out)  # fmt: skip


def show_requests(
    client: ApiClient, project: str | None, denied: bool, limit: int, json_out: bool
) -> None:
    rows = client.get("/v1/egress/requests", project=project, denied=denied, limit=limit)
    listing(
        "egress requests" + (" (denied)" if denied else ""),
        ["at", "agent", "method", "host", "port", "decision", "up", "down"],
        rows,
        _cells,
        json_out,
    )


def _cells(row: dict[str, Any]) -> list[Any]:
    data = row["data"]
    decision = "allowed" if data.get("allowed") else f"denied ({data.get('reason')})"
    return [
        when(row["at"]),
        visible(data.get("role") or "-", 30),
        visible(data.get("method"), 10),
        visible(data.get("host"), 60),
        data.get("port"),
        visible(decision, 40),
        data.get("bytes_up"),
        data.get("bytes_down"),
    ]
