"""From a spec to a running team, and back: `up`, `down`, `resume`, `destroy`, `status`.

Each step is a call into the package (spec, team, worktrees, briefing, images, sandboxes) or the
host API; this module only puts them in order and reports progress.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentvisor.client import ApiClient
from agentvisor.config import Settings
from agentvisor.core.briefing import BriefingContext, render_briefing
from agentvisor.core.spec import Spec, load_spec
from agentvisor.core.team import TeamPlan, plan_team, reports_to
from agentvisor.core.team_refinement import Refinement, describe_refinement
from agentvisor.errors import (
    AgentvisorError,
    Conflict,
    InvalidInput,
    SandboxError,
    SandboxesNotStopped,
)
from agentvisor.git import layout_migration
from agentvisor.git.layout_migration import MigrationReport
from agentvisor.git.project_files import committed_role_briefings
from agentvisor.git.project_repo import (
    NEW_PROJECT_SPEC_NAME,
    create_new_project,
    find_project,
    new_project_folder,
    start_branch,
)
from agentvisor.git.worktrees import Worktree, ensure_worktree, list_worktrees, remove_worktree
from agentvisor.model import dry_run
from agentvisor.sandbox import mcp_config
from agentvisor.sandbox.sandbox_user import sandbox_owner
from agentvisor.server import server_control
from agentvisor.store.database import project_settings

if TYPE_CHECKING:
    from agentvisor.server.project_queue import QueuedLaunch

Progress = Callable[[str], None]
PROFILES = ("claude", "demo", "generic")


@dataclass(frozen=True)
class UpOptions:
    spec: Path
    project_dir: Path | None = None
    new_project: bool = False
    force: bool = False
    roles: tuple[str, ...] | None = None
    team_type: str | None = None
    plan: str | None = None
    agent: str | None = None  # claude | demo | generic; None = settings.agent
    checkin_minutes: float | None = None
    # Egress allowlist entries for this project (`--allow`), kept in the store.
    allow: tuple[str, ...] = ()
    wait_s: float = 60.0  # how long to wait for every briefing to be verified
    budget: dict[str, float] = field(default_factory=dict)  # `up --budget`: Budget fields
    # `up --model scripted[:SCRIPT]`: a dry run against the scripted model server with this
    # script (a file's path, or "dry-run"); None: the real model.
    model: str | None = None
    routine_checkin: bool = True  # the orchestrator's recurring check-in (`--no-routine-checkin`)
    refine: bool = False  # `up --refine`: the model refines the keyword team (model assist)


@dataclass
class AgentRow:
    role: str
    branch: str
    worktree: str
    container: str = ""
    status: str = ""
    briefing: str = ""  # delivered | queued | failed ...


@dataclass
class UpReport:
    project: str
    path: Path
    start_branch: str
    profile: str
    team: TeamPlan | None
    agents: list[AgentRow] = field(default_factory=list)
    already_running: bool = False
    elapsed_s: float = 0.0
    refinement: Refinement | None = None  # `up --refine`: what the model made of the team


def choose_profile(wanted: str, env: dict[str, str] | None = None, home: Path | None = None) -> str:
    """`auto` picks Claude Code when its credentials are on the host, else the demo agent."""
    if wanted != "auto":
        if wanted not in PROFILES:
            raise InvalidInput(
                f"unknown agent profile '{wanted}': use auto, " + ", ".join(PROFILES)
            )
        return wanted
    env = dict(os.environ if env is None else env)
    home = home or Path(env.get("HOME", "~")).expanduser()
    if env.get("ANTHROPIC_API_KEY") or (home / ".claude" / ".credentials.json").is_file():
        return "claude"
    return "demo"


def project_name(root: Path) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", root.name.lower()).strip("-")[:40] or "project"
    return name if name[0].isalpha() else f"p-{name}"


def planned_name(spec: Spec, project_dir: Path | None = None) -> tuple[str | None, str]:
    """The name `up` would give the spec's project, and where it comes from (for `plan`):
    the name of the repository's folder, which also names `<folder>-worktrees`."""
    try:
        root = find_project(spec.path, project_dir)
    except AgentvisorError as exc:
        return None, f"none yet ({exc.message})"
    return project_name(root), f"the folder of its repository, {root}"


def _unique_name(client: ApiClient, root: Path) -> str:
    """The project's name; a second repository with the same folder name gets a hash suffix."""
    name = project_name(root)
    for project in client.get("/v1/projects"):
        if project["name"] == name and project["path"] and Path(project["path"]) != root:
            return f"{name}-{hashlib.sha1(str(root).encode()).hexdigest()[:6]}"
    return name


def ensure_server(settings: Settings, progress: Progress) -> None:
    if not server_control.is_running(settings):
        progress("starting the agentvisor server")
        server_control.start_detached(settings)


def image_for(settings: Settings, profile: str) -> tuple[str, str]:
    """(image tag, agent CLIs to install) for a profile."""
    if profile == "claude":
        return settings.image, "claude"
    return settings.demo_image, "none"


def ensure_image(settings: Settings, profile: str, progress: Progress) -> str:
    from agentvisor.sandbox import images

    tag, clis = image_for(settings, profile)
    if not images.image_exists(tag):
        progress(f"building the sandbox image {tag} (first time only)")
        images.build_sandbox_image(tag=tag, agent_clis=clis, progress=progress)
    return tag


def _backend(settings: Settings) -> Any:
    from agentvisor.sandbox.sandboxes import SandboxBackend

    return SandboxBackend(settings)


def up(settings: Settings, options: UpOptions, progress: Progress = lambda _: None) -> UpReport:
    """Bring a team up for a spec. A second `up` on a running project changes nothing."""
    started = time.monotonic()
    spec = load_spec(options.spec)
    team = plan_team(spec.text, roles=options.roles, team_type=options.team_type, plan=options.plan)
    if options.new_project:
        root = _reusable_new_project(spec) if not options.force else None
        if root is None:
            root = create_new_project(spec.path, force=options.force)
            progress(f"created project repository {root}")
    else:
        root = find_project(spec.path, options.project_dir)
    branch = start_branch(root)
    profile = _profile_for(settings, options)
    ensure_server(settings, progress)
    with ApiClient(settings) as client:
        name = _unique_name(client, root)
        backend = _backend(settings)
        running = {s.role for s in backend.list(name) if s.status == "running"}
        if running and (set(team.roles) <= running or options.refine):
            # What `up` changes on a running project: its budget, its egress allowlist.
            if options.budget:
                client.post("/v1/budget", {"project": name, **options.budget})
            for entry in options.allow:
                client.post("/v1/egress/rules", {"project": name, "entry": entry, "origin": "up"})
            report = UpReport(name, root, branch, profile, team, already_running=True)
            report.agents = _rows(client, backend, name, root)
            return report
        image = ensure_image(settings, profile, progress)
        project = client.post(
            "/v1/projects",
            {"name": name, "path": str(root), "spec_path": str(spec.path), "start_branch": branch},
        )
        # Running before any sandbox starts: a stopped project's agents lease nothing.
        client.post(f"/v1/projects/{name}/state", {"state": "running"})
        if options.model is not None:
            _start_scripted_model(settings, client, name, options.model, progress)
        elif project_settings(project).get("model"):  # an earlier dry run's: the real one now
            dry_run.stop(settings, name)
            client.post(f"/v1/projects/{name}/model", {"upstream": None})
        for entry in options.allow:  # before any sandbox starts: its first request may need it
            client.post("/v1/egress/rules", {"project": name, "entry": entry, "origin": "up"})
        if options.budget:
            client.post("/v1/budget", {"project": name, **options.budget})
        refinement = None
        if options.refine:  # after the budget and a dry run's model: the request uses both
            refinement = _refine(client, name, spec, team, options.roles, options.team_type)
            progress(refinement_line(refinement))
            team = refinement.team
        worktrees = _worktrees(root, team.roles, branch, settings, progress)
        team_launch = TeamLaunch(settings, client, name, root, branch, worktrees, progress)
        launches = _start_sandboxes(team_launch, backend, profile, image)
        message_ids = _brief(team_launch, spec, team.roles, options.checkin_minutes)
        _schedule_routines(settings, client, name, team, options)
        progress("waiting for every briefing to arrive in its pane")
        states = _wait_delivered(client, name, message_ids, options.wait_s)
        report = UpReport(name, root, branch, profile, team, refinement=refinement)
        for role in team.roles:
            report.agents.append(
                AgentRow(
                    role,
                    worktrees[role].branch,
                    str(worktrees[role].path),
                    launches.get(role, ""),
                    "running",
                    states.get(message_ids[role], "queued"),
                )
            )
    report.elapsed_s = time.monotonic() - started
    return report


def refine(
    settings: Settings,
    spec: Spec,
    team: TeamPlan,
    roles: tuple[str, ...] | None = None,
    team_type: str | None = None,
    project_dir: Path | None = None,
    progress: Progress = lambda _: None,
) -> Refinement:
    """`plan --refine`: the model's refinement of `team`. The project is registered first (as
    `up` registers it; nothing starts), so that the request counts against its budget."""
    try:
        root = find_project(spec.path, project_dir)
    except AgentvisorError as exc:
        return Refinement(team, None, f"no project to count the request against: {exc.message}")
    ensure_server(settings, progress)
    with ApiClient(settings) as client:
        name = _unique_name(client, root)
        client.post(
            "/v1/projects",
            {
                "name": name,
                "path": str(root),
                "spec_path": str(spec.path),
                "start_branch": start_branch(root),
            },
        )
        return _refine(client, name, spec, team, roles, team_type)


def _refine(
    client: ApiClient,
    name: str,
    spec: Spec,
    team: TeamPlan,
    roles: tuple[str, ...] | None,
    team_type: str | None,
) -> Refinement:
    answer = client.post(
        "/v1/assist/team",
        {
            "project": name,
            "spec": spec.text,
            "roles": list(roles) if roles else None,
            "team_type": team_type,
            "plan": team.plan,
        },
    )
    return Refinement.from_dict(team, answer)


def refinement_line(refinement: Refinement) -> str:
    """The one line `up --refine` shows of the model's team (role names only: checked)."""
    if refinement.refined is None:
        return describe_refinement(refinement)[0]
    return f"model assist: refined team: {', '.join(refinement.refined.roles)}"


def _profile_for(settings: Settings, options: UpOptions) -> str:
    if options.model is None:
        return choose_profile(options.agent or settings.agent)
    if options.agent not in (None, "claude"):
        raise InvalidInput(
            f"--model scripted is a dry run of the real Claude Code; drop --agent {options.agent}"
            " (or use --agent claude)"
        )
    return "claude"


def _start_scripted_model(
    settings: Settings, client: ApiClient, name: str, script: str, progress: Progress
) -> None:
    model = dry_run.start(settings, name, script)
    client.post(f"/v1/projects/{name}/model", {"upstream": model.url, "script": script})
    progress(
        f"dry run: the scripted model server at {model.url} ({script}) answers the agents; "
        f"its requests: {dry_run.requests_file(settings, name)}"
    )


def _reusable_new_project(spec: Spec) -> Path | None:
    """The project an earlier `up --new-project` made from this same spec, if any: so that a
    second `up` finds the running project instead of refusing to overwrite it."""
    target = new_project_folder(spec.path)
    copied = target / NEW_PROJECT_SPEC_NAME
    same = (target / ".git").exists() and copied.is_file()
    if same and copied.read_text(encoding="utf-8", errors="replace") == spec.text:
        return target
    return None


def _worktrees(
    root: Path, roles: tuple[str, ...], branch: str, settings: Settings, progress: Progress
) -> dict[str, Worktree]:
    owner = sandbox_owner(settings)
    worktrees = {}
    for role in roles:
        worktree = ensure_worktree(root, role, branch, owner=owner)
        if worktree.created:
            progress(f"repository {worktree.path} on branch {worktree.branch}")
        worktrees[role] = worktree
    return worktrees


@dataclass(frozen=True)
class TeamLaunch:
    """What starting a team's sandboxes and briefing it share (`up`, `resume`)."""

    settings: Settings
    client: ApiClient
    name: str  # the project
    root: Path  # the project repository
    branch: str  # its start branch
    worktrees: dict[str, Worktree]  # each role's own clone
    progress: Progress


def _start_sandboxes(
    launch: TeamLaunch, backend: Any, profile: str, image: str, resume: bool = False
) -> dict[str, str]:
    from agentvisor.sandbox.claude import sandbox_extras
    from agentvisor.sandbox.sandbox_tokens import write_token_file
    from agentvisor.sandbox.sandboxes import build_spec, gather_spec_inputs

    settings, client, name, root = launch.settings, launch.client, launch.name, launch.root
    worktrees, branch, progress = launch.worktrees, launch.branch, launch.progress

    token_files = {}
    for role in worktrees:
        token_file = settings.tokens_dir / name / f"{role}.token"
        if not token_file.exists():
            agent = client.post("/v1/agents", {"project": name, "role": role, "profile": profile})
            token_file = write_token_file(settings, name, role, agent["token"])
        token_files[role] = token_file
    # Each agent's Claude Code conversation has an id the store chose: a restart resumes it.
    sessions = {a["role"]: a.get("session_id") for a in client.get("/v1/agents", project=name)}
    specs = []
    for role, worktree in worktrees.items():
        extras = sandbox_extras(settings, profile, sessions.get(role))
        mcp = mcp_config.sandbox_env(mcp_config.servers_for(settings, name, role))
        specs.append(
            build_spec(
                gather_spec_inputs(
                    settings,
                    project=name,
                    role=role,
                    worktree=worktree.path,
                    repo_root=root,
                    token_file=token_files[role],
                    profile=profile,
                    image=image,
                    extra_env={
                        **extras.env,
                        **(mcp if profile == "claude" else {}),
                        **_test_clock_env(settings),
                    },
                    credential_mounts=extras.mounts,
                    resume=resume,
                    start_branch=branch,
                )
            )
        )
    progress(f"starting {len(specs)} sandboxes")
    started = backend.start_many(specs)
    return {info.role: info.name for info in started}


def _test_clock_env(settings: Settings) -> dict[str, str]:
    """Tests only: a server clock moved by a file in the socket folder moves the shims' clocks
    too (sandboxes see that folder at /run/agentvisor/sock)."""
    offset = settings.clock_offset_file
    if not offset or Path(offset).parent.resolve() != settings.socket_dir.resolve():
        return {}
    return {"AGENTVISOR_CLOCK_OFFSET_FILE": f"/run/agentvisor/sock/{Path(offset).name}"}


def _brief(
    launch: TeamLaunch,
    spec: Spec,
    roles: tuple[str, ...],
    checkin_minutes: float | None,
    again: bool = False,
) -> dict[str, int]:
    """Each role's briefing, once per spec text (an `up` again sends none); `again`: a new
    one all the same, said to be one (`resume --rebrief`)."""
    settings, client, name, root = launch.settings, launch.client, launch.name, launch.root
    worktrees, branch = launch.worktrees, launch.branch
    overrides = committed_role_briefings(root, branch)  # never a checkout's copy
    digest = hashlib.sha1(spec.text.encode("utf-8")).hexdigest()[:12]
    ids = {}
    for role in roles:
        context = BriefingContext(
            project=name,
            reports_to=reports_to(role),
            team=roles,
            branch=worktrees[role].branch,
            start_branch=branch,
            checkin_minutes=checkin_minutes or settings.orchestrator_checkin_minutes,
            spec=spec.text,
        )
        body = render_briefing(role, context, overrides)
        key = f"briefing-{role}-{digest}"
        if again:
            body = f"{REBRIEF_NOTE}\n\n{body}"
            key = f"rebriefing-{role}-{digest}-{time.time_ns()}"
        message = client.post(
            "/v1/messages",
            {"project": name, "to": role, "body": body, "kind": "briefing", "idempotency_key": key},
        )
        ids[role] = message["id"]
    return ids


REBRIEF_NOTE = (
    "(Your briefing again, as the operator asked on resume. Your earlier work is on your "
    "branch: look at `git log` and `agent inbox` before you go on.)"
)


ROUTINE_NOTE = "Routine check-in"


def _schedule_routines(
    settings: Settings, client: ApiClient, name: str, team: TeamPlan, options: UpOptions
) -> None:
    every = options.checkin_minutes or settings.orchestrator_checkin_minutes
    if options.routine_checkin:
        client.post(
            "/v1/checkins",
            {
                "project": name,
                "to": "orchestrator",
                "minutes": every,
                "every_minutes": every,
                "note": f"{ROUTINE_NOTE}: review the team's progress (agent team, agent inbox), "
                "unblock anyone waiting, and schedule what comes next.",
                "idempotency_key": "orchestrator-routine",
            },
        )
    else:  # and one an earlier `up` scheduled goes
        for checkin in client.get("/v1/checkins", project=name):
            if checkin["note"].startswith(ROUTINE_NOTE):
                client.delete(f"/v1/checkins/{checkin['id']}")
    reminder = settings.commit_reminder_minutes
    for role in team.roles:
        client.post(
            "/v1/checkins",
            {
                "project": name,
                "to": role,
                "minutes": reminder,
                "every_minutes": reminder,
                "note": "Commit reminder: commit your work on your branch now if you have not "
                "in the last 30 minutes (git add -A && git commit -m '...').",
                "idempotency_key": f"commit-reminder-{role}",
            },
        )


def _wait_delivered(
    client: ApiClient, name: str, ids: dict[str, int], wait_s: float
) -> dict[int, str]:
    deadline = time.monotonic() + wait_s
    wanted = set(ids.values())
    states: dict[int, str] = {}
    while True:
        for message in client.get("/v1/messages", project=name, limit=500):
            if message["id"] in wanted:
                states[message["id"]] = message["state"]
        if all(states.get(i) == "delivered" for i in wanted) or time.monotonic() > deadline:
            return states
        time.sleep(0.1)


def _rows(client: ApiClient, backend: Any, name: str, root: Path) -> list[AgentRow]:
    sandboxes = {s.role: s for s in backend.list(name)}
    rows = []
    for worktree in list_worktrees(root):
        sandbox = sandboxes.get(worktree.role)
        rows.append(
            AgentRow(
                worktree.role,
                worktree.branch,
                str(worktree.path),
                sandbox.name if sandbox else "",
                sandbox.status if sandbox else "absent",
            )
        )
    return rows


def resolve_project(client: ApiClient, project: str | None) -> dict[str, Any]:
    """The project named `project`, or the only one there is; a clear error otherwise."""
    projects = client.get("/v1/projects")
    if project:
        for row in projects:
            if row["name"] == project:
                return row
        known = ", ".join(p["name"] for p in projects) or "none yet"
        raise InvalidInput(f"unknown project '{project}' (known: {known})")
    if len(projects) == 1:
        return projects[0]
    if not projects:
        raise InvalidInput("no project yet: start one with 'agentvisor up SPEC'")
    raise InvalidInput(
        "several projects: say which one (known: " + ", ".join(p["name"] for p in projects) + ")"
    )


def down(settings: Settings, project: str | None) -> list[str]:
    """Stop the project's sandboxes; state, worktrees and schedule are kept."""
    with ApiClient(settings) as client:
        name = resolve_project(client, project)["name"]
        # Stopped first: from now on nothing is leased, not even by a sandbox still stopping.
        client.post(f"/v1/projects/{name}/state", {"state": "stopped"})
        failure: SandboxesNotStopped | None = None
        try:
            stopped = list(_backend(settings).stop(name))
        except SandboxesNotStopped as exc:  # the rest of `down` still runs, then it is told
            failure, stopped = exc, exc.stopped
        dry_run.stop(settings, name)
        client.post(f"/v1/projects/{name}/release")  # what the stopped shims held goes back
        # Again: an orchestrator's "PROJECT COMPLETE" sent while its sandbox was stopping
        # would otherwise leave the stopped project shown as complete.
        client.post(f"/v1/projects/{name}/state", {"state": "stopped"})
    if failure is not None:
        raise failure
    return stopped


def resume(
    settings: Settings,
    project: str | None,
    progress: Progress = lambda _: None,
    rebrief: bool = False,
) -> UpReport:
    """Bring a stopped project's sandboxes back; pending check-ins and messages then flow."""
    ensure_server(settings, progress)
    with ApiClient(settings) as client:
        row = resolve_project(client, project)
        name, root = row["name"], Path(row["path"])
        agents = client.get("/v1/agents", project=name)
        if not agents:
            raise InvalidInput(f"project '{name}' has no agents to resume; use 'agentvisor up'")
        profile = agents[0]["profile"] or "demo"
        branch = row["start_branch"] or start_branch(root)
        image = ensure_image(settings, profile, progress)
        scripted = project_settings(row).get("model")
        if isinstance(scripted, dict) and scripted.get("script"):
            _start_scripted_model(settings, client, name, str(scripted["script"]), progress)
        roles = tuple(a["role"] for a in agents)
        worktrees = _worktrees(root, roles, branch, settings, progress)
        backend = _backend(settings)
        client.post(f"/v1/projects/{name}/state", {"state": "running"})
        team_launch = TeamLaunch(settings, client, name, root, branch, worktrees, progress)
        _start_sandboxes(team_launch, backend, profile, image, resume=True)
        if rebrief:
            if not row["spec_path"]:
                raise InvalidInput(f"project '{name}' has no spec on record to brief from")
            _brief(team_launch, load_spec(row["spec_path"]), roles, None, again=True)
            progress(f"briefed {len(roles)} agents again")
        report = UpReport(name, root, branch, profile, None)
        report.agents = _rows(client, backend, name, root)
        return report


def destroy(settings: Settings, project: str, remove_worktrees: bool) -> list[str]:
    """Remove the project's sandboxes (and their home volumes); worktrees only when asked."""
    with ApiClient(settings) as client:
        row = resolve_project(client, project)
    removed = list(_backend(settings).remove(row["name"], volumes=True))
    if dry_run.stop(settings, row["name"]):
        removed.append(f"the scripted model server of {row['name']}")
    if remove_worktrees and row["path"]:
        root = Path(row["path"])
        for worktree in list_worktrees(root):
            try:
                remove_worktree(root, worktree.role, force=True)
                removed.append(str(worktree.path))
            except AgentvisorError as exc:
                raise Conflict(f"could not remove {worktree.path}: {exc.message}") from None
    return removed


def migrate(settings: Settings, project: str | None) -> MigrationReport:
    """Move a project made by agentvisor 0.1 to one repository per agent (layout_migration)."""
    with ApiClient(settings) as client:
        row = resolve_project(client, project)
    name, root = row["name"], Path(row["path"])
    running = [s.role for s in _backend(settings).list(name) if s.status == "running"]
    if running:
        raise Conflict(
            f"the sandboxes of {name} are running ({', '.join(running)}); run "
            f"'agentvisor down {name}' first, then migrate"
        )
    branch = row["start_branch"] or start_branch(root)
    return layout_migration.migrate(root, branch, sandbox_owner(settings))


@dataclass
class StatusRow:
    role: str
    state: str
    sandbox: str
    last_seen_at: float | None
    next_checkin_at: float | None
    pending: int
    paused_until: float | None
    paused_reason: str | None = None  # a usage limit, or a budget and how to raise it


def status(settings: Settings, project: str | None) -> tuple[dict[str, Any], list[StatusRow]]:
    with ApiClient(settings) as client:
        row = resolve_project(client, project)
        name = row["name"]
        agents = client.get("/v1/agents", project=name)
        checkins = client.get("/v1/checkins", project=name)
        row = {
            **row,
            "failed_checkins": len(client.get("/v1/checkins", project=name, state="failed")),
        }
        pending = [
            m
            for m in client.get("/v1/messages", project=name, limit=500)
            if m["state"] in ("queued", "leased")
        ]
    try:
        sandboxes = {s.role: s.status for s in _backend(settings).list(name)}
    except SandboxError:
        sandboxes = {}
    rows = []
    now = time.time()
    for agent in agents:
        due = [c["due_at"] for c in checkins if c["recipient_id"] == agent["id"]]
        paused = (agent["paused_until"] or 0) > now
        rows.append(
            StatusRow(
                agent["role"],
                agent["state"] or "-",
                sandboxes.get(agent["role"], "absent"),
                agent["last_seen_at"],
                min(due) if due else None,
                sum(1 for m in pending if m["recipient_id"] == agent["id"]),
                agent["paused_until"],
                agent.get("paused_reason") if paused else None,
            )
        )
    return row, rows


def launch_queued(
    settings: Settings, queued: QueuedLaunch, progress: Callable[[str], None]
) -> tuple[str, Path]:
    """The queue runner's launcher (the server gets it from the CLI's `serve`): `up` in this
    process, which reaches the server over its socket like any other `up`."""
    options = UpOptions(
        spec=queued.spec,
        project_dir=queued.project_dir,
        new_project=queued.new_project,
        roles=queued.roles,
        team_type=queued.team_type,
        plan=queued.plan,
        agent=queued.agent,
        refine=queued.refine,
    )
    report = up(settings, options, progress)
    return report.project, report.path
