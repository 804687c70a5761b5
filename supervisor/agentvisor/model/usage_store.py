"""What the model broker counted (the `model_usage` table, one row per request) and the
projects' budgets (in the project's `settings`). Part of the store.
agentvisor's own model requests (model assist: `plan --refine`, the queue's research step) are
rows of their project with agent id ASSIST_AGENT_ID, which no agent has: they count toward the
project's tokens and budget, and show as the role `agentvisor`."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from typing import Any

from agentvisor.model.model_broker import Budget, Usage
from agentvisor.store.database import AGENTVISOR, Row, Store, insert_row, project_settings

TOKENS_SQL = (
    "COALESCE(SUM(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens), 0)"
)
TOTALS_SQL = f"""
    COUNT(u.id) AS requests,
    COALESCE(SUM(input_tokens), 0) AS input_tokens,
    COALESCE(SUM(output_tokens), 0) AS output_tokens,
    COALESCE(SUM(cache_creation_tokens), 0) AS cache_creation_tokens,
    COALESCE(SUM(cache_read_tokens), 0) AS cache_read_tokens,
    {TOKENS_SQL} AS tokens,
    COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS errors,
    COALESCE(SUM(CASE WHEN status = 429 THEN 1 ELSE 0 END), 0) AS rate_limited,
    MAX(u.reset_at) AS last_reset_at,
    MAX(u.at) AS last_at
"""
ASSIST_AGENT_ID = 0  # agentvisor's own requests (row ids start at 1)


class UsageStore:
    def __init__(self, store: Store) -> None:
        self.store = store

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
        with self.store.transaction() as db:
            insert_row(
                db,
                "model_usage",
                {
                    "at": self.store.clock.now(),
                    "project_id": agent["project_id"],
                    "agent_id": agent["id"],
                    "path": path[:200],
                    "status": status,
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_creation_tokens": usage.cache_creation_input_tokens,
                    "cache_read_tokens": usage.cache_read_input_tokens,
                    "model": usage.model,
                    "error": usage.error,
                    "reset_at": reset_at,
                    "first_byte_ms": first_byte_ms,
                    "duration_ms": duration_ms,
                },
            )

    def agent_tokens_since(self, agent_id: int, since: float) -> int:
        row = self.store.fetch_one(
            f"SELECT {TOKENS_SQL} AS n FROM model_usage WHERE agent_id = ? AND at >= ?",
            (agent_id, since),
        )
        return int(row["n"]) if row else 0

    def project_tokens(self, project_id: int) -> int:
        row = self.store.fetch_one(
            f"SELECT {TOKENS_SQL} AS n FROM model_usage WHERE project_id = ?", (project_id,)
        )
        return int(row["n"]) if row else 0

    def by_agent(self, project_id: int | None = None, since: float = 0.0) -> list[Row]:
        """Totals per agent (agents that made no request included), in role order, then
        agentvisor's own per project where it made any."""
        where = "WHERE a.project_id = ?" if project_id is not None else ""
        params: tuple[Any, ...] = (since,) if project_id is None else (since, project_id)
        agents = self.store.fetch_all(
            f"""
            SELECT p.name AS project, a.role AS role, a.id AS agent_id,
                   a.paused_until AS paused_until, a.paused_reason AS paused_reason, {TOTALS_SQL}
            FROM agents a JOIN projects p ON p.id = a.project_id
            LEFT JOIN model_usage u ON u.agent_id = a.id AND u.at >= ?
            {where}
            GROUP BY a.id ORDER BY p.name, a.role
            """,
            params,
        )
        own_where = "AND u.project_id = ?" if project_id is not None else ""
        own = self.store.fetch_all(
            f"""
            SELECT p.name AS project, ? AS role, ? AS agent_id,
                   NULL AS paused_until, NULL AS paused_reason, {TOTALS_SQL}
            FROM model_usage u JOIN projects p ON p.id = u.project_id
            WHERE u.agent_id = ? AND u.at >= ? {own_where}
            GROUP BY u.project_id ORDER BY p.name
            """,
            (AGENTVISOR, ASSIST_AGENT_ID, ASSIST_AGENT_ID, *params),
        )
        return agents + own

    def series(self, project_id: int, since: float, bucket_s: float) -> list[Row]:
        """Tokens per agent per time bucket since `since`: the dashboard's chart."""
        return self.store.fetch_all(
            f"""
            SELECT COALESCE(a.role, ?) AS role, CAST((u.at - ?) / ? AS INTEGER) AS bucket,
                   {TOKENS_SQL} AS tokens, COUNT(*) AS requests
            FROM model_usage u LEFT JOIN agents a ON a.id = u.agent_id
            WHERE u.project_id = ? AND u.at >= ?
            GROUP BY role, bucket ORDER BY role, bucket
            """,
            (AGENTVISOR, since, bucket_s, project_id, since),
        )

    # -- budgets ---------------------------------------------------------------------------
    def budget(self, project: Row, default: Budget) -> Budget:
        """The project's budget: the settings' defaults with the project's own values over
        them (`agentvisor budget`, `up --budget`)."""
        own = project_settings(project).get("budget") or {}
        names = {f.name for f in fields(Budget)}
        return replace(default, **{k: v for k, v in own.items() if k in names})

    def set_budget(self, project: Row, values: dict[str, float]) -> Row:
        settings = project_settings(project)
        budget = dict(settings.get("budget") or {})
        budget.update(values)
        settings["budget"] = budget
        with self.store.transaction() as db:
            db.table("projects").update(project["id"], {"settings": json.dumps(settings)})
            self.store.log_event("project.budget_set", project["id"], data=budget, db=db)
        return self.store.get_project_by_id(project["id"])
