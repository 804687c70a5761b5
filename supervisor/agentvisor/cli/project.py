"""Project commands of the CLI: plan, up, status, down, resume, destroy."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from agentvisor.cli.args import finite_float
from agentvisor.cli.render import (
    cell,
    console,
    err_console,
    print_json,
    safe_table,
    table,
    visible,
    when,
)
from agentvisor.config import Settings, load_settings
from agentvisor.core.spec import load_spec
from agentvisor.core.team import describe_plan, plan_team
from agentvisor.core.team_refinement import describe_refinement
from agentvisor.lazy import lazy_module
from agentvisor.model import dry_run

if TYPE_CHECKING:
    from agentvisor import launch
else:  # the store, git and the sandbox code: loaded by the commands that use them
    launch = lazy_module("agentvisor.launch")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
RolesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--roles",
        help="Comma-separated roles, overriding the team chosen from the spec; repeatable "
        "(--roles developer --roles tester adds up).",
    ),
]
TypeOpt = Annotated[str | None, typer.Option("--team-type", help="Force a project type.")]
PlanOpt = Annotated[
    str | None,
    typer.Option("--plan", help="Cap the team size: pro, max5, max20 or console (no cap)."),
]
RefineOpt = Annotated[
    bool,
    typer.Option(
        "--refine",
        help="Ask the model to refine the keyword team (model assist: through the broker, "
        "counted against the project's budget); without a model, the keyword team.",
    ),
]


def _roles(roles: list[str] | None) -> tuple[str, ...] | None:
    """Every --roles given, in order: each a comma-separated list."""
    if not roles:
        return None
    return tuple(r.strip() for given in roles for r in given.split(",") if r.strip())


def register(app: typer.Typer) -> None:
    _migrate_command(app)

    @app.command("plan")
    def plan_cmd(
        ctx: typer.Context,
        spec: Path,
        roles: RolesOpt = None,
        team_type: TypeOpt = None,
        plan: PlanOpt = None,
        refine: RefineOpt = False,
        json_out: JsonOpt = False,
    ) -> None:
        """Print the team a spec would get, and why, without starting anything."""
        loaded = load_spec(spec)
        team = plan_team(loaded.text, roles=_roles(roles), team_type=team_type, plan=plan)
        name, why = launch.planned_name(loaded)
        refinement = None
        if refine:
            shown = err_console if json_out else console
            refinement = launch.refine(
                load_settings(ctx.obj.state),
                loaded,
                team,
                _roles(roles),
                team_type,
                progress=lambda line: shown.log(line, markup=False, highlight=False),
            )
        if json_out:
            print_json(
                {
                    "project": name,
                    "title": loaded.title,
                    "project_type": team.project_type,
                    "roles": team.roles,
                    "reasons": team.reasons,
                    "dropped": team.dropped,
                    **({"refinement": refinement.as_dict()} if refinement else {}),
                }
            )
            return
        console.print(f"spec: {loaded.title} ({loaded.path})", markup=False, highlight=False)
        named = f"project: {name}, named after {why}" if name else f"project: {why}"
        console.print(named, markup=False, highlight=False)
        for line in describe_plan(team):
            console.print(line, markup=False, highlight=False)
        for line in describe_refinement(refinement) if refinement else []:
            console.print(visible(line, 400), markup=False, highlight=False)

    @app.command()
    def up(
        ctx: typer.Context,
        specs: Annotated[
            list[str] | None,
            typer.Argument(help="Spec file(s), folders or globs; several go to the queue."),
        ] = None,
        spec_opt: Annotated[
            list[str] | None, typer.Option("--spec", help="A spec (repeatable).")
        ] = None,
        project: Annotated[
            Path | None,
            typer.Option(
                "--project",
                help="The project's git repository (default: the one holding the spec).",
            ),
        ] = None,
        new_project: Annotated[
            bool,
            typer.Option("--new-project", help="Create a new repository named after the spec."),
        ] = False,
        force: Annotated[
            bool, typer.Option("--force", help="With --new-project: replace an existing folder.")
        ] = False,
        roles: RolesOpt = None,
        team_type: TypeOpt = None,
        plan: PlanOpt = None,
        agent: Annotated[
            str | None,
            typer.Option(
                "--agent",
                help="Agent profile: claude, "
                "demo or generic (default: claude when "
                "its credentials are found).",
            ),
        ] = None,
        checkin_minutes: Annotated[
            float | None,
            typer.Option(
                "--checkin-minutes",
                help="The orchestrator's routine check-in interval.",
                parser=finite_float,
            ),
        ] = None,
        allow: Annotated[
            list[str] | None,
            typer.Option(
                "--allow",
                metavar="HOST[:PORT]",
                help="Let the agents reach HOST (port 80/443, or PORT) through the egress proxy; "
                "repeatable; a preset name (pypi, npm, debian, github, ...) too.",
            ),
        ] = None,
        budget: Annotated[
            list[str] | None,
            typer.Option(
                "--budget",
                help="KEY=VALUE, repeatable: agent-tokens-per-day, project-tokens, "
                "project-hours (0: no limit). Later: agentvisor budget PROJECT.",
            ),
        ] = None,
        routine_checkin: Annotated[
            bool,
            typer.Option(
                "--routine-checkin/--no-routine-checkin",
                help="The orchestrator's recurring check-in from agentvisor (on by default).",
            ),
        ] = True,
        refine: RefineOpt = False,
        model: Annotated[
            str | None,
            typer.Option(
                "--model",
                metavar="scripted[:SCRIPT]",
                help="A dry run: the real Claude Code against the scripted model server on this "
                "host (the built-in team script, or SCRIPT.json); no key or login needed.",
            ),
        ] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Bring a team of agents up for SPEC, each in its own sandbox."""
        from agentvisor.model.model_broker import parse_budget

        try:
            budget_values = parse_budget(budget or [])
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        from agentvisor.cli.queue import add_to_queue, expand_specs, show
        from agentvisor.server.egress.allowlist import checked_entry

        settings = load_settings(ctx.obj.state)
        entries = tuple(checked_entry(e) for e in allow or ())  # refused before anything starts
        scripted = dry_run.parse_model(model)
        found = expand_specs([*(specs or []), *(spec_opt or [])]) if (specs or spec_opt) else []
        if not found:
            raise typer.BadParameter("give a spec file: agentvisor up spec.md")
        if len(found) > 1 and entries:
            raise typer.BadParameter(
                "--allow is for one spec; for queued specs use 'agentvisor egress allow PROJECT "
                "HOST' or egress_allow in config.toml"
            )
        if len(found) > 1 and scripted:
            raise typer.BadParameter("--model scripted is for one spec at a time")
        if len(found) > 1:
            launch.ensure_server(settings, lambda line: console.log(line))
            queued = add_to_queue(
                ctx.obj.state,
                found,
                project,
                {
                    "new_project": new_project,
                    "agent": agent,
                    "roles": _roles(roles),
                    "team_type": team_type,
                    "plan": plan,
                    "refine": refine,
                },
            )
            show(queued)
            console.print(
                f"{len(queued)} specs queued; they start one at a time "
                "('agentvisor queue list' to follow)"
            )
            return
        options = launch.UpOptions(
            spec=found[0],
            project_dir=project,
            new_project=new_project,
            force=force,
            roles=_roles(roles),
            team_type=team_type,
            plan=plan,
            agent=agent,
            checkin_minutes=checkin_minutes,
            allow=entries,
            budget=budget_values,
            model=scripted,
            routine_checkin=routine_checkin,
            refine=refine,
        )
        # With --json, stdout is the JSON alone: progress goes to stderr.
        shown = err_console if json_out else console
        with shown.status("starting") as spinner:

            def progress(line: str) -> None:
                spinner.update(line)
                if not line.startswith("Step") and not line.startswith(" "):
                    shown.log(line, markup=False, highlight=False)

            report = launch.up(settings, options, progress)
        if json_out:
            print_json(
                {
                    "project": report.project,
                    "path": str(report.path),
                    "already_running": report.already_running,
                    "profile": report.profile,
                    "agents": [vars(a) for a in report.agents],
                    **({"refinement": report.refinement.as_dict()} if report.refinement else {}),
                }
            )
            return
        if report.already_running:
            console.print(f"project '{report.project}' is already running: nothing changed")
        else:
            console.print(
                f"project '{report.project}' is up in {report.elapsed_s:.1f} s "
                f"({report.profile} agents, start branch {report.start_branch})"
            )
        table(
            f"team of {report.project}",
            ["role", "branch", "worktree", "briefing", "attach"],
            (
                [
                    a.role,
                    a.branch,
                    a.worktree,
                    a.briefing or a.status,
                    f"agentvisor attach {a.role}",
                ]
                for a in report.agents
            ),
        )
        console.print("watch: agentvisor status --watch   |   stop: agentvisor down")

    @app.command()
    def status(
        ctx: typer.Context,
        project: Annotated[str | None, typer.Argument()] = None,
        watch: Annotated[bool, typer.Option("--watch", help="Refresh in place.")] = False,
        json_out: JsonOpt = False,
    ) -> None:
        """Agents, their state, last activity, next check-in and pending messages."""
        settings = load_settings(ctx.obj.state)
        if watch and not json_out:
            from rich.live import Live

            with Live(console=console, refresh_per_second=2) as live:
                while True:
                    live.update(_status_table(settings, project))
                    time.sleep(2)
        row, rows = launch.status(settings, project)
        if json_out:
            print_json({"project": row, "agents": [vars(r) for r in rows]})
            return
        console.print(_status_table(settings, project, (row, rows)))

    @app.command()
    def down(ctx: typer.Context, project: Annotated[str | None, typer.Argument()] = None) -> None:
        """Stop the project's sandboxes; state, worktrees and schedule are kept."""
        stopped = launch.down(load_settings(ctx.obj.state), project)
        console.print(f"stopped {len(stopped)} sandbox(es); 'agentvisor resume' brings them back")

    @app.command()
    def resume(
        ctx: typer.Context,
        project: Annotated[str | None, typer.Argument()] = None,
        rebrief: Annotated[
            bool,
            typer.Option(
                "--rebrief", help="Send every agent its briefing again (old --rebrief-all)."
            ),
        ] = False,
    ) -> None:
        """Bring a stopped project back; pending check-ins and messages are delivered."""
        report = launch.resume(
            load_settings(ctx.obj.state),
            project,
            lambda line: console.log(line, markup=False),
            rebrief=rebrief,
        )
        table(
            f"team of {report.project}",
            ["role", "branch", "sandbox", "status"],
            ([a.role, a.branch, a.container, a.status] for a in report.agents),
        )

    @app.command()
    def destroy(
        ctx: typer.Context,
        project: str,
        yes: Annotated[
            bool, typer.Option("--yes", "-y", help="Also remove the worktrees without asking.")
        ] = False,
    ) -> None:
        """Remove the project's sandboxes and, after confirmation, its worktrees."""
        remove = yes or typer.confirm(
            f"also remove the worktrees of '{project}'? (branches are kept)", default=False
        )
        removed = launch.destroy(load_settings(ctx.obj.state), project, remove)
        console.print(f"removed: {', '.join(removed) or 'nothing'}")


def _migrate_command(app: typer.Typer) -> None:
    @app.command()
    def migrate(
        ctx: typer.Context, project: Annotated[str | None, typer.Argument()] = None
    ) -> None:
        """Give each agent of a project made by agentvisor 0.1 a repository of its own."""
        report = launch.migrate(load_settings(ctx.obj.state), project)
        if not report.migrated:
            console.print("nothing to migrate: every agent has a repository of its own")
            return
        console.print(f"migrated: {', '.join(report.migrated)}")
        for kept in report.kept:
            console.print(f"kept the old folder {kept}: delete it once you have checked it")
        for aside in report.quarantined:
            console.print(f"set aside {aside}: the sandbox wrote it; inspect, then delete it")
        for warning in report.warnings:
            console.print(f"warning: {warning}")
        console.print("then: agentvisor resume")


def failed_checkins_line(count: int) -> str:
    """What the operator is told of check-ins the scheduler set aside (docs/contracts.md)."""
    return (
        f"{count} check-in(s) could not fire and were set aside (state failed); "
        "'agentvisor checkins --all' lists them, 'agentvisor events' says why"
    )


def _status_table(
    settings: Settings,
    project: str | None,
    data: tuple[dict[str, Any], list[launch.StatusRow]] | None = None,
) -> Table:
    row, rows = data or launch.status(settings, project)
    t = safe_table(f"{row['name']} ({row['state']}) {row['path']}")
    for column in (
        "role",
        "state",
        "sandbox",
        "last activity",
        "next check-in",
        "pending",
        "paused until",
    ):
        t.add_column(column)
    for r in rows:
        t.add_row(
            *(
                cell(value, 60)
                for value in (
                    r.role,
                    r.state,
                    r.sandbox,
                    when(r.last_seen_at),
                    when(r.next_checkin_at),
                    str(r.pending),
                    when(r.paused_until) if r.paused_until else "",
                )
            )
        )
    notes = []
    if row.get("failed_checkins"):
        notes.append(visible(failed_checkins_line(row["failed_checkins"]), 200))
    notes += [f"{r.role} paused: {visible(r.paused_reason, 200)}" for r in rows if r.paused_reason]
    if notes:
        t.caption = Text("\n".join(notes))
    return t
