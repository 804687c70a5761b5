"""The check-ins `up` schedules itself, against a real server: the orchestrator's routine one
(`--no-routine-checkin` turns it off, also on a project that has one) and the commit reminders."""

from __future__ import annotations

from pathlib import Path

from agentvisor import launch
from agentvisor.core.team import plan_team
from tests.conftest import ServerProcess


def test_no_routine_checkin_leaves_it_out_and_cancels_an_earlier_one(
    server: ServerProcess, tmp_path: Path
):
    for role in ("orchestrator", "developer"):
        server.register_agent("demo", role)
    team = plan_team("", roles=["developer"])
    options = launch.UpOptions(spec=tmp_path / "spec.md")
    launch._schedule_routines(server.settings, server.client, "demo", team, options)

    def notes() -> list[str]:
        return sorted(c["note"].split(":")[0] for c in server.client.get("/v1/checkins"))

    assert notes() == ["Commit reminder", "Commit reminder", "Routine check-in"]
    off = launch.UpOptions(spec=tmp_path / "spec.md", routine_checkin=False)
    launch._schedule_routines(server.settings, server.client, "demo", team, off)
    assert notes() == ["Commit reminder", "Commit reminder"]
