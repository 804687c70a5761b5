"""`agentvisor service install|status|uninstall`: the server as a systemd service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentvisor.cli import systemd_unit
from agentvisor.cli.render import console
from agentvisor.config import Settings, load_settings
from agentvisor.errors import InvalidInput
from agentvisor.server import server_control

UserOpt = Annotated[
    bool, typer.Option("--user", help="A unit of your own user's systemd (starts at login).")
]
NameOpt = Annotated[str, typer.Option("--name", help="The unit's name (several state dirs).")]
DirOpt = Annotated[
    Path | None,
    typer.Option("--unit-dir", help="Write the unit here instead of systemd's folder."),
]


def register(app: typer.Typer) -> None:
    service = typer.Typer(
        help="Run the server as a systemd service (starts at boot, restarts on failure).",
        no_args_is_help=True,
    )
    app.add_typer(service, name="service")

    @service.command("install")
    def install(
        ctx: typer.Context,
        user: UserOpt = False,
        name: NameOpt = systemd_unit.DEFAULT_NAME,
        unit_dir: DirOpt = None,
        port: Annotated[
            int | None, typer.Option("--port", help="Also listen on this loopback TCP port.")
        ] = None,
        enable: Annotated[
            bool, typer.Option("--enable/--no-enable", help="Enable and start it now.")
        ] = True,
    ) -> None:
        """Write the unit, check it, and (with systemd running) enable and start it."""
        settings = load_settings(ctx.obj.state)
        plan = systemd_unit.plan_unit(
            settings, user_mode=user, name=name, directory=unit_dir, port=port
        )
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        systemd_unit.write_unit(plan)
        problem = systemd_unit.verify(plan.path)
        if problem:
            plan.path.unlink(missing_ok=True)
            raise InvalidInput(f"the unit did not pass systemd-analyze verify: {problem}")
        console.print(f"wrote {plan.path}", markup=False, highlight=False)
        if not enable:
            return
        if not systemd_unit.systemd_running():
            raise InvalidInput(
                f"systemd is not running on this host, so {plan.name} was written but not "
                "started; use `agentvisor serve --detach` from a boot script, or docker compose "
                "(docs/guides/compose.md)"
            )
        if server_control.is_running(settings):
            console.print("stopping the server that runs now: systemd takes it over")
            server_control.stop_server(settings)
        for args in (("daemon-reload",), ("enable", "--now", f"{plan.name}.service")):
            done = systemd_unit.systemctl(plan, *args)
            if done.returncode != 0:
                raise InvalidInput(f"systemctl {' '.join(args)} failed: {done.stderr.strip()}")
        console.print(f"{plan.name}.service enabled and started", markup=False, highlight=False)

    @service.command("status")
    def status(
        ctx: typer.Context,
        user: UserOpt = False,
        name: NameOpt = systemd_unit.DEFAULT_NAME,
        unit_dir: DirOpt = None,
    ) -> None:
        """Whether the unit is installed, and what systemd says of it."""
        settings, plan = _installed(ctx, user, name, unit_dir)
        if not plan.path.exists():
            console.print(f"not installed ({plan.path} does not exist)", markup=False)
            raise typer.Exit(3)
        console.print(f"installed: {plan.path}", markup=False, highlight=False)
        running = server_control.is_running(settings)
        console.print(f"server answering on {settings.socket_path}: {'yes' if running else 'no'}")
        if systemd_unit.systemd_running():
            done = systemd_unit.systemctl(plan, "is-active", f"{plan.name}.service")
            console.print(f"systemd: {done.stdout.strip() or done.stderr.strip()}", markup=False)
        else:
            console.print("systemd: not running on this host", markup=False)

    @service.command("uninstall")
    def uninstall(
        ctx: typer.Context,
        user: UserOpt = False,
        name: NameOpt = systemd_unit.DEFAULT_NAME,
        unit_dir: DirOpt = None,
    ) -> None:
        """Stop and disable the service and remove its unit (the state dir stays)."""
        _, plan = _installed(ctx, user, name, unit_dir)
        if not plan.path.exists():
            console.print(f"nothing to remove: {plan.path} does not exist", markup=False)
            return
        if systemd_unit.systemd_running():
            systemd_unit.systemctl(plan, "disable", "--now", f"{plan.name}.service")
        plan.path.unlink()
        if systemd_unit.systemd_running():
            systemd_unit.systemctl(plan, "daemon-reload")
        console.print(f"removed {plan.path}", markup=False, highlight=False)


def _installed(
    ctx: typer.Context, user: bool, name: str, unit_dir: Path | None
) -> tuple[Settings, systemd_unit.UnitPlan]:
    """The settings and the unit `install` wrote (or would write) for these options."""
    settings = load_settings(ctx.obj.state)
    return settings, systemd_unit.plan_unit(settings, user_mode=user, name=name, directory=unit_dir)
