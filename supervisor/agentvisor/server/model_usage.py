"""What the broker does with what it sees: count each request, pause an agent at a usage limit
or a budget, tell the orchestrator and the operator, and lift a budget pause when the budget
is raised. The numbers live in agentvisor.model.usage_store; the routes in
agentvisor.server.api.model."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

from agentvisor.errors import AgentvisorError, InvalidInput
from agentvisor.model.model_broker import Budget, BudgetHit, Usage, budget_hit, day_start
from agentvisor.model.usage_store import UsageStore
from agentvisor.server.auth import Caller
from agentvisor.server.service import Service, UsageLimitSource
from agentvisor.store.database import AGENTVISOR, Row

BUDGET_REASON = "budget"  # agents.paused_reason starts with it: `budget: <message>`
FOREVER_S = 366 * 86400  # a project budget's pause lasts until the budget is raised
_LABEL = re.compile(r"[^A-Za-z0-9_.-]")


def label(value: Any) -> str:
    """A Prometheus label value that can be nothing but a name."""
    return _LABEL.sub("_", str(value))[:64]


@dataclass
class ModelAccounting:
    service: Service

    @property
    def usage(self) -> UsageStore:
        return UsageStore(self.service.store)

    def default_budget(self) -> Budget:
        s = self.service.settings
        return Budget(
            s.budget_agent_tokens_per_day, s.budget_project_tokens, s.budget_project_hours
        )

    # -- before a request ------------------------------------------------------------------
    def refusal(self, agent: Row) -> str | None:
        """Why this agent may not use the model now (a budget), pausing it the first time."""
        reason, hit = self.check(agent)
        if hit is not None:
            store = self.service.store
            project = store.get_project_by_id(agent["project_id"])
            self.pause_for_budget(project, agent, hit, store.clock.now())
        return reason

    def check(self, agent: Row) -> tuple[str | None, BudgetHit | None]:
        """Reads only: the reason the agent is refused, and a budget newly reached (which the
        caller pauses it for, off the event loop)."""
        store = self.service.store
        now = store.clock.now()
        agent = store.get_agent_by_id(agent["id"])
        reason = agent.get("paused_reason") or ""
        if reason.startswith(BUDGET_REASON) and (agent["paused_until"] or 0) > now:
            return reason.partition(": ")[2] or reason, None
        project = store.get_project_by_id(agent["project_id"])
        hit = self.hit(project, agent, now)
        return (None, None) if hit is None else (hit.message, hit)

    def hit(self, project: Row, agent: Row, now: float) -> BudgetHit | None:
        budget = self.usage.budget(project, self.default_budget())
        if not (budget.agent_tokens_per_day or budget.project_tokens or budget.project_hours):
            return None
        return budget_hit(
            budget,
            str(project["name"]),
            str(agent["role"]),
            self.usage.agent_tokens_since(agent["id"], day_start(now)),
            self.usage.project_tokens(project["id"]),
            now - float(project["created_at"] or now),
            now,
        )

    def pause_for_budget(self, project: Row, agent: Row, hit: BudgetHit, now: float) -> None:
        """Pause the agent (every agent of the project for a project budget) and say so."""
        store = self.service.store
        until = hit.until or now + FOREVER_S
        targets = [agent] if hit.until else store.list_agents(project["id"])
        for target in targets:
            store.update_agent(
                target["id"],
                paused_until=until,
                state="paused",
                paused_reason=f"{BUDGET_REASON}: {hit.message}",
            )
        if hit.until:
            store.add_checkin(
                project["id"],
                AGENTVISOR,
                agent["id"],
                "Your daily token budget has renewed. Continue where you left off.",
                until,
                idempotency_key=f"budget-resume-{agent['id']}-{int(until)}",
            )
            if self.service.scheduler is not None:
                self.service.scheduler.wake(until)
        store.log_event(
            "model.budget_reached",
            project["id"],
            agent["id"],
            {"role": agent["role"], "rule": hit.rule, "message": hit.message, "until": hit.until},
        )
        self.service.metrics.inc(f'model_budget_pauses|rule="{label(hit.rule)}"')
        self._tell_orchestrator(project, agent, f"Budget reached: {hit.message}.", hit.rule, now)

    def _tell_orchestrator(
        self, project: Row, agent: Row, text: str, rule: str, now: float
    ) -> None:
        store = self.service.store
        with contextlib.suppress(AgentvisorError):
            orchestrator = store.get_agent(project["id"], "orchestrator")
            store.add_message(
                project["id"],
                AGENTVISOR,
                orchestrator["id"],
                text,
                kind="notice",
                idempotency_key=f"budget-{rule}-{agent['id']}-{int(now // 3600)}",
            )
            self.service.waiters.notify([orchestrator["id"]])

    # -- after a request -------------------------------------------------------------------
    def record(
        self,
        agent: Row,
        path: str,
        status: int,
        usage: Usage,
        reset_at: float | None,
        first_byte_ms: float | None,
        duration_ms: float,
    ) -> None:
        self.usage.record(agent, path, status, usage, reset_at, first_byte_ms, duration_ms)
        store = self.service.store
        project = store.get_project_by_id(agent["project_id"])
        who = f'project="{label(project["name"])}",role="{label(agent["role"])}"'
        metrics = self.service.metrics
        metrics.inc(f'model_requests|{who},status="{status // 100}xx"')
        for kind, amount in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_creation", usage.cache_creation_input_tokens),
            ("cache_read", usage.cache_read_input_tokens),
        ):
            if amount:
                metrics.inc(f'model_tokens|{who},kind="{kind}"', amount)
        if status == 429:
            metrics.inc(f"model_rate_limited|{who}")
            now = store.clock.now()
            if (
                reset_at is not None
                and reset_at - now >= self.service.settings.usage_limit_min_pause_s
            ):
                store.log_event(
                    "model.usage_limit",
                    project["id"],
                    agent["id"],
                    {"role": agent["role"], "status": status, "reset_at": reset_at},
                )
                self.service.pause_for_usage_limit(agent, reset_at, UsageLimitSource.BROKER)

    # -- the operator's side ---------------------------------------------------------------
    def set_budget(self, caller: Caller, project_name: str, values: dict[str, float]) -> Row:
        """Change a project's budget; agents paused by a budget that no longer holds resume."""
        caller.require_operator()
        for key, value in values.items():
            if value < 0:
                raise InvalidInput(f"budget {key} must not be negative (0: no limit)")
        store = self.service.store
        project = self.usage.set_budget(store.get_project(project_name), values)
        now = store.clock.now()
        for agent in store.list_agents(project["id"]):
            reason = agent.get("paused_reason") or ""
            if not reason.startswith(BUDGET_REASON) or (agent["paused_until"] or 0) <= now:
                continue
            if self.hit(project, agent, now) is None:
                store.update_agent(agent["id"], paused_until=None, paused_reason=None, state="idle")
                store.add_message(
                    project["id"],
                    AGENTVISOR,
                    agent["id"],
                    "Your budget was raised. Continue where you left off.",
                    kind="notice",
                    idempotency_key=f"budget-raised-{agent['id']}-{int(now)}",
                )
                self.service.waiters.notify([agent["id"]])
                store.log_event("model.budget_lifted", project["id"], agent["id"], {})
        return self.report(caller, project_name)

    def report(self, caller: Caller, project_name: str | None, since: float = 0.0) -> Row:
        """Usage per agent and the budget, for `agentvisor usage` and the dashboard."""
        store = self.service.store
        project = self.service.project_for(caller, project_name) if project_name else None
        if project is None and caller.agent is not None:
            project = store.get_project_by_id(caller.agent["project_id"])
        rows = self.usage.by_agent(project["id"] if project else None, since)
        now = store.clock.now()
        for row in rows:
            paused = (row["paused_until"] or 0) > now
            row["paused_reason"] = row["paused_reason"] if paused else None
            if not paused:
                row["paused_until"] = None
        out: Row = {"agents": rows, "now": now}
        if project is not None:
            budget = self.usage.budget(project, self.default_budget())
            out.update(
                project=project["name"],
                budget=budget.as_dict(),
                project_tokens=self.usage.project_tokens(project["id"]),
                project_age_s=now - float(project["created_at"] or now),
            )
        return out

    def chart(self, project: Row, since: float, bucket_s: float) -> Row:
        return {
            "since": since,
            "bucket_s": bucket_s,
            "points": self.usage.series(project["id"], since, bucket_s),
        }
