"""agentvisor's own requests to the model (model assist): refine a team for `plan/up --refine`,
research a failed queued project before its retry. Each goes where the broker sends the agents'
requests (the project's scripted model in a dry run, else `model_upstream` with the host's
credential), is refused when the project's budget is reached, and is counted as the project's
usage under the role `agentvisor`. Anything that keeps the model from helping is one line in
`AssistUnavailable`; callers then go on without it. Prompts and answers: team_refinement.py,
failure_research.py."""

from __future__ import annotations

import logging
import os
import ssl
import time
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from agentvisor.config import Settings
from agentvisor.core.failure_research import parse_research, research_request
from agentvisor.core.model_replies import UnusableAnswer, one_line
from agentvisor.core.team import TeamPlan
from agentvisor.core.team_refinement import (
    Refinement,
    max_team_size,
    parse_refined_team,
    refine_request,
)
from agentvisor.errors import AgentvisorError
from agentvisor.model.model_broker import (
    AGENT_HEADER,
    DRY_RUN_CREDENTIAL,
    MAX_JSON_BODY,
    Budget,
    Credential,
    UsageMeter,
    budget_hit,
    upstream_headers,
)
from agentvisor.model.model_login import CredentialSource, credential_source
from agentvisor.model.usage_store import ASSIST_AGENT_ID, UsageStore
from agentvisor.store.database import AGENTVISOR, Row, Store, project_settings

log = logging.getLogger("agentvisor.model")
API_VERSION = "2023-06-01"
MAX_LINE = 300  # of a reason shown to the operator


class AssistUnavailable(AgentvisorError):
    """The model cannot help now (none configured, budget reached, an error answer)."""

    status = 503


@dataclass
class ModelAssist:
    settings: Settings
    store: Store
    # The broker's own source (one refresh of a login at a time); None: one of its own.
    credentials: CredentialSource | None = None
    _http: httpx.Client | None = field(default=None, repr=False)

    # -- what callers use -----------------------------------------------------------------
    def refine_team(self, project: Row, spec_text: str, keyword: TeamPlan) -> Refinement:
        """The model's refinement of `keyword`, or the keyword team and why (never raises)."""
        body = refine_request(
            spec_text,
            keyword,
            model=self.settings.model_assist_model,
            max_tokens=self.settings.model_assist_max_tokens,
        )
        try:
            answer = self.ask(project, "refine", body)
            return Refinement(keyword, parse_refined_team(answer, max_team_size(keyword.plan)))
        except (AssistUnavailable, UnusableAnswer) as exc:
            return Refinement(keyword, None, one_line(exc, MAX_LINE))

    def research(
        self,
        project: Row,
        spec_text: str,
        reason: str,
        panes: dict[str, str],
        events: list[Row],
    ) -> str:
        """The model's research summary of a failure; AssistUnavailable or UnusableAnswer
        saying why there is none."""
        body = research_request(
            spec_text,
            reason,
            panes,
            events,
            model=self.settings.model_assist_model,
            max_tokens=self.settings.model_assist_max_tokens,
        )
        return parse_research(self.ask(project, "research", body))

    # -- the request ------------------------------------------------------------------------
    def ask(self, project: Row, purpose: str, body: dict[str, Any]) -> Any:
        """The model's JSON answer to `body`, metered as the project's."""
        self._check_budget(project)
        url, credential, extra = self._upstream(project)
        started = time.monotonic()
        try:
            answer = self._post(url, credential, extra, body)
            if answer.status_code == 401 and credential.kind == "oauth" and self.credentials:
                fresh = self.credentials.after_rejection(credential)
                if fresh is not None:
                    answer = self._post(url, fresh, extra, body)
        except httpx.HTTPError as exc:
            self._record(project, purpose, 502, UsageMeter(False), started)
            raise AssistUnavailable(f"cannot reach the model upstream {url}: {exc}") from None
        meter = UsageMeter(False)
        meter.feed(answer.content[: MAX_JSON_BODY + 1])
        self._record(project, purpose, answer.status_code, meter, started)
        try:
            data = answer.json()
        except ValueError:
            data = None
        if answer.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            said = error.get("message") if isinstance(error, dict) else answer.text[:200]
            raise AssistUnavailable(
                f"the model answered {answer.status_code}: {one_line(said or '', 200)}"
            )
        if not isinstance(data, dict):
            raise AssistUnavailable("the model's answer is not a JSON object")
        return data

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- inside -------------------------------------------------------------------------------
    def _check_budget(self, project: Row) -> None:
        usage = UsageStore(self.store)
        s = self.settings
        default = Budget(
            s.budget_agent_tokens_per_day, s.budget_project_tokens, s.budget_project_hours
        )
        # The project's limits only: agentvisor is no agent with a daily budget of its own.
        budget = replace(usage.budget(project, default), agent_tokens_per_day=0)
        now = self.store.clock.now()
        hit = budget_hit(
            budget,
            str(project["name"]),
            AGENTVISOR,
            0,
            usage.project_tokens(project["id"]),
            now - float(project["created_at"] or now),
            now,
        )
        if hit is not None:
            raise AssistUnavailable(f"the project's budget is reached: {hit.message}")

    def _upstream(self, project: Row) -> tuple[str, Credential, dict[str, str]]:
        """(URL of the Messages API, credential, extra headers), as the broker would choose."""
        own = project_settings(project).get("model")
        if isinstance(own, dict) and own.get("upstream"):
            header = {AGENT_HEADER: f"{project['name']}/{AGENTVISOR}"}
            return f"{str(own['upstream']).rstrip('/')}/v1/messages", DRY_RUN_CREDENTIAL, header
        try:
            credential = self._source().current()
        except AgentvisorError as exc:
            raise AssistUnavailable(f"no model configured: {exc.message}") from None
        return f"{self.settings.model_upstream.rstrip('/')}/v1/messages", credential, {}

    def _source(self) -> CredentialSource:
        if self.credentials is None:
            self.credentials = credential_source(self.settings, dict(os.environ),
                                                 self.store.clock.now)  # fmt: skip
        return self.credentials

    def _post(
        self, url: str, credential: Credential, extra: dict[str, str], body: dict[str, Any]
    ) -> httpx.Response:
        if self._http is None:
            verify: ssl.SSLContext | bool = True
            if self.settings.model_upstream_ca:
                verify = ssl.create_default_context(cafile=self.settings.model_upstream_ca)
            self._http = httpx.Client(
                trust_env=False, verify=verify, timeout=self.settings.model_assist_timeout_s
            )
        headers = upstream_headers(
            {"content-type": "application/json", "anthropic-version": API_VERSION}, credential
        )
        return self._http.post(url, json=body, headers={**headers, **extra})

    def _record(
        self, project: Row, purpose: str, status: int, meter: UsageMeter, started: float
    ) -> None:
        usage = meter.finish()
        duration_ms = (time.monotonic() - started) * 1000
        own = {"id": ASSIST_AGENT_ID, "project_id": project["id"]}
        try:
            UsageStore(self.store).record(
                own, "v1/messages", status, usage, None, None, duration_ms
            )
            self.store.log_event(
                "model.assist",
                project["id"],
                data={"purpose": purpose, "status": status, "tokens": usage.total},
            )
        except Exception:  # the answer is here; a failed count is logged, never hidden
            log.exception("could not record the model usage of agentvisor's %s", purpose)
