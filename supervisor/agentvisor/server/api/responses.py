"""The host API's answers as pydantic models, so `/openapi.json` names their fields as
docs/contracts.md does. Each row model carries every column of its store table (and may be
null where the column may be): a model missing a field would drop it from the answer.

Answers are validated leniently (they come from our own store), never strictly: a row an older
version wrote must still list. tests/integration/test_api_responses.py proves no route drops a
key its code returns.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Answer(BaseModel):
    """An answer of the API: the fields below, in this order."""


# -- rows of the store --------------------------------------------------------------------
class Message(Answer):
    id: int
    project_id: int
    sender: str | None = Field(description="A role, `operator` or `agentvisor`.")
    recipient_id: int = Field(description="The id of the recipient agent.")
    body: str
    kind: str | None
    state: str = Field(description="queued, leased, delivered, failed or cancelled.")
    attempts: int | None = Field(description="Leases counted toward the retry limit.")
    leases: int = Field(description="Every lease the message was ever handed out under.")
    lease_id: str | None
    lease_expires_at: float | None
    created_at: float | None
    updated_at: float | None
    delivered_at: float | None
    last_error: str | None
    checkin_id: int | None = Field(description="The check-in that fired it, if one did.")
    marker: str | None = Field(description="`av-<id in base36>`, typed with the text.")
    idempotency_key: str | None


class Checkin(Answer):
    id: int
    project_id: int
    creator: str | None = Field(description="The sender of the messages it fires.")
    created_by: int | None = Field(
        description="The id of the agent that scheduled it; null: the operator or agentvisor."
    )
    recipient_id: int
    note: str
    # Text only in a row the scheduler could not fire (state failed): it still lists.
    due_at: float | str = Field(description="Epoch seconds.")
    every_s: float | str | None = Field(description="The repeat in seconds; null: once.")
    state: str = Field(description="pending, fired, cancelled or failed.")
    fired_count: int | None
    last_fired_at: float | None
    created_at: float | None
    idempotency_key: str | None


class Agent(Answer):
    id: int
    project_id: int
    role: str
    profile: str | None
    container: str | None
    state: str | None = Field(description="registered, or what its shim last reported.")
    last_seen_at: float | None
    created_at: float | None
    paused_until: float | None
    paused_reason: str | None
    session_id: str | None = Field(description="Its Claude Code conversation's id.")
    pane_changed_at: float | None
    info: str | None = Field(description="Its last heartbeat's `info`, as JSON text.")
    nudge_at: float | None


class RegisteredAgent(Agent):
    token: str = Field(description="A fresh token; the agent's old one stops working.")


class Project(Answer):
    id: int
    name: str
    path: str | None
    spec_path: str | None
    start_branch: str | None
    state: str = Field(description="created, running, stopped, complete or failed.")
    created_at: float | None
    updated_at: float | None
    settings: str | None = Field(
        description="The project's own settings (routing, budget, model) as JSON text."
    )


class Event(Answer):
    id: int
    at: float | None
    project_id: int | None
    agent_id: int | None
    kind: str | None
    data: dict[str, Any]


class QueueEntry(Answer):
    id: int
    spec_path: str
    project_dir: str | None
    options: dict[str, Any]
    state: str = Field(description="queued, running, complete, failed or cancelled.")
    attempts: int | None
    max_attempts: int | None
    project: str | None
    current_spec: str | None
    created_at: float | None
    started_at: float | None
    deadline_at: float | None
    finished_at: float | None
    last_error: str | None
    escalated_at: float | None


# -- the shim's inbox ---------------------------------------------------------------------
class LeaseAnswer(Answer):
    message: Message
    lease_id: str
    lease_expires_at: float


class AckAnswer(Message):
    next: LeaseAnswer | None = Field(
        default=None,
        description="With `lease_next=true` only: the next lease, or null when there is none.",
    )


class Released(Answer):
    released: int


class HeartbeatAnswer(Answer):
    ok: bool
    nudge: bool = Field(description="Press the profile's nudge key once (a stalled agent).")


class DoneLogged(Answer):
    """The orchestrator's report: logged for the operator, not sent as a message."""

    recipient: Literal["operator"]
    body: str
    state: Literal["logged"]


# -- status -------------------------------------------------------------------------------
class Health(Answer):
    ok: bool
    version: str
    db: str = Field(description="`ok`, or why the database is not writable.")
    disk_free_mb: int
    disk: str | None = Field(default=None, description="Present when the disk is nearly full.")
    scheduler: str
    docker: str
    model_login: str | None = Field(
        default=None, description="Present when the host's Claude Code login is not refreshed."
    )


class Whoami(Answer):
    kind: Literal["agent", "operator"]
    project: str | None = None
    role: str | None = None
    agent_id: int | None = None
    profile: str | None = None


class Routing(Answer):
    project: str
    copy_to: str
    copy_kinds: list[str]
    copy_patterns: list[str]
    hub_only: bool


# -- egress, model usage, assist ----------------------------------------------------------
class EgressRule(Answer):
    entry: str
    origin: str = Field(description="config.toml, operator or up.")


class EgressRuleRemoved(Answer):
    entry: str


class UsageAgent(Answer):
    project: str
    role: str
    agent_id: int = Field(description="0 for agentvisor's own requests (model assist).")
    paused_until: float | None
    paused_reason: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    tokens: int
    errors: int
    rate_limited: int
    last_reset_at: float | None
    last_at: float | None


class BudgetLimits(Answer):
    agent_tokens_per_day: int
    project_tokens: int
    project_hours: float


class UsageReport(Answer):
    agents: list[UsageAgent]
    now: float
    # With a project only:
    project: str | None = None
    budget: BudgetLimits | None = None
    project_tokens: int | None = None
    project_age_s: float | None = None


class UsagePoint(Answer):
    role: str
    bucket: int
    tokens: int
    requests: int


class UsageChart(Answer):
    since: float
    bucket_s: float
    points: list[UsagePoint]


class RefinedTeam(Answer):
    roles: list[str]
    reasons: list[str]
    summary: str


class TeamAnswer(Answer):
    keyword_roles: list[str]
    roles: list[str]
    refined: RefinedTeam | None
    fallback: str | None = Field(description="Why the keyword team stands, in one line.")


# -- the dashboard ------------------------------------------------------------------------
class DashboardUsage(UsageReport):
    chart: UsageChart


class SandboxSample(Answer):
    error: str | None
    sampled_at: float | None


class DashboardState(Answer):
    """The dashboard's snapshot; its rows are described in docs/guides/dashboard.md."""

    version: str
    now: float
    heartbeat_timeout_s: float
    projects: list[dict[str, Any]]
    queue: list[dict[str, Any]]
    pane_streams: int
    project: dict[str, Any] | None
    agents: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    checkins: list[dict[str, Any]]
    events: list[dict[str, Any]]
    sandboxes: SandboxSample
    usage: DashboardUsage | None
    egress: list[dict[str, Any]] | None = Field(default=None, description="With a project only.")


# -- answers documented beside the route's own --------------------------------------------
def documented(status: int, model: type[BaseModel], description: str) -> dict[int | str, Any]:
    """A `responses=` entry naming an answer's model in the OpenAPI schema. The hot routes
    (sending, the inbox, the heartbeat) name theirs this way only, with `response_model=Any`:
    nothing validated or filtered, pydantic-core writes the row as it is, as fast as before
    (`response_model=None` would make FastAPI walk it with jsonable_encoder, ~15x slower)."""
    return {status: {"model": model, "description": description}}


def replayed(model: type[BaseModel]) -> dict[int | str, Any]:
    """The 200 of a route that answers 201: the idempotency key was seen, the first one."""
    return documented(200, model, "The same idempotency_key was used before: the first one.")
