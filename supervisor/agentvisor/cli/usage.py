"""Model usage and budgets in the CLI: `agentvisor usage [PROJECT]`, `agentvisor budget PROJECT`.
Both are one call of the host API (`GET /v1/usage`, `POST /v1/budget`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agentvisor.cli.args import non_negative_float
from agentvisor.cli.render import console, print_json, table, when
from agentvisor.client import ApiClient
from agentvisor.config import load_settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _limit(value: float) -> str:
    return f"{value:g}" if value else "none"


def show_usage(report: dict[str, Any]) -> None:
    table(
        f"model usage of {report.get('project') or 'every project'}",
        ["project", "role", "requests", "input", "output", "cache write", "cache read",
         "tokens", "errors", "429s", "last", "paused"],
        (
            [
                a["project"], a["role"], a["requests"], a["input_tokens"], a["output_tokens"],
                a["cache_creation_tokens"], a["cache_read_tokens"], a["tokens"], a["errors"],
                a["rate_limited"], when(a["last_at"]),
                (a["paused_reason"] or "usage limit") if a["paused_until"] else "",
            ]
            for a in report["agents"]
        ),
    )  # fmt: skip
    budget = report.get("budget")
    if budget:
        console.print(
            f"budget: {_limit(budget['agent_tokens_per_day'])} tokens per agent per day, "
            f"{_limit(budget['project_tokens'])} tokens for the project "
            f"(used {report['project_tokens']}), {_limit(budget['project_hours'])} hours "
            f"(running {report['project_age_s'] / 3600:.1f} h); "
            f"change it with agentvisor budget {report['project']} ...",
            markup=False,
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    @app.command()
    def usage(
        ctx: typer.Context,
        project: Annotated[str | None, typer.Argument()] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Model requests and tokens per agent, as the broker counted them, and the budget."""
        with ApiClient(load_settings(ctx.obj.state)) as client:
            report = client.get("/v1/usage", **({"project": project} if project else {}))
        if json_out:
            print_json(report)
        else:
            show_usage(report)

    @app.command()
    def budget(
        ctx: typer.Context,
        project: Annotated[str, typer.Argument()],
        agent_tokens_per_day: Annotated[
            int | None, typer.Option("--agent-tokens-per-day", help="0: no limit.", min=0)
        ] = None,
        project_tokens: Annotated[
            int | None, typer.Option("--project-tokens", help="0: no limit.", min=0)
        ] = None,
        project_hours: Annotated[
            float | None,
            typer.Option(
                "--project-hours",
                help="Wall-clock since the project was made.",
                parser=non_negative_float,
            ),
        ] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Show or change a project's budget; agents paused by a budget it no longer reaches
        continue at once."""
        values = {
            k: v
            for k, v in {
                "agent_tokens_per_day": agent_tokens_per_day,
                "project_tokens": project_tokens,
                "project_hours": project_hours,
            }.items()
            if v is not None
        }
        with ApiClient(load_settings(ctx.obj.state)) as client:
            if values:
                report = client.post("/v1/budget", {"project": project, **values})
            else:
                report = client.get("/v1/usage", project=project)
        if json_out:
            print_json(report)
        else:
            show_usage(report)
