"""Model assist in the server's process: the queue's research step (a queued project that fails
is retried with the model's summary of the failure appended to its spec; the request is the
project's usage) and where a dry run's request goes. A real store, the scripted model server on
loopback as the upstream, and a stand-in for the sandboxes that only shows their screens."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from agentvisor.clock import SystemClock
from agentvisor.config import Settings
from agentvisor.model.model_assist import ModelAssist
from agentvisor.model.model_login import CredentialSource
from agentvisor.model.usage_store import UsageStore
from agentvisor.server.project_queue import QueueRunner
from agentvisor.store.database import Store
from agentvisor.store.queue_store import QueueStore
from agentvisor.testing.model_server import ModelServer

KEY = "queue-research-key"
SPEC = "# Shop\n\nBuild a web app with a React frontend and a login form for customers.\n"
SUMMARY = "- The tester waited on a server nobody started.\n- Start it in the test fixture."


@dataclass
class _Sandbox:
    role: str
    status: str = "running"


class _Screens:
    """The sandboxes as the runner sees them: two running, each with a screen."""

    def list(self, project: str) -> list[_Sandbox]:
        return [_Sandbox("orchestrator"), _Sandbox("tester")]

    def pane_history(self, project: str, role: str, lines: int) -> str:
        return f"{role}: waiting for http://127.0.0.1:8000 ...\n"

    def stop(self, project: str) -> list[str]:
        return []


def _failed_run(tmp: Path, settings: Settings, credentials: CredentialSource | None) -> tuple:
    """A queued project that timed out, failed by the runner (with model assist through
    `credentials`, if given); (store, project, the queue row for its retry)."""
    store = Store(tmp / "db.sqlite", SystemClock())
    project = store.upsert_project("shop", str(tmp))
    spec = tmp / "spec.md"
    spec.write_text(SPEC, encoding="utf-8")
    queue = QueueStore(store)
    row = queue.add(str(spec), None, {}, max_attempts=2)
    queue.claim_next(timeout_s=-1)  # its deadline has passed
    queue.update(row["id"], project="shop")
    runner = QueueRunner(settings, store, backend_factory=_Screens)
    runner.assist = ModelAssist(settings, store, credentials) if credentials else None
    runner.run_once()
    return store, project, queue.get(row["id"])


def _retry_event(store: Store) -> dict:
    events = store.list_events(None, limit=50)
    return next(e for e in events if e["kind"] == "queue.retry")["data"]


def test_a_failed_project_is_retried_with_the_models_research_summary(tmp_path: Path):
    script = {"agents": {"*": [{"tool": "report_research", "input": {"summary": SUMMARY}}]}}
    with ModelServer(script) as model:
        settings = Settings(
            state_dir=tmp_path, model_assist=True, model_upstream=model.url, queue_concurrency=0
        )
        credentials = CredentialSource(
            {"ANTHROPIC_API_KEY": KEY}, tmp_path / "no-login.json", "http://token", "client"
        )
        store, project, row = _failed_run(tmp_path, settings, credentials)
        [asked] = model.conversation()
    assert row["state"] == "queued" and row["attempts"] == 1
    retry = Path(row["current_spec"]).read_text(encoding="utf-8")
    assert retry.startswith(SPEC.rstrip())
    assert "### Research summary (model-assisted, from the failure's context)" in retry
    assert "> - The tester waited on a server nobody started." in retry
    # What the model was shown: the spec, the reason and the screens, quoted as data.
    prompt = asked["body"]["messages"][0]["content"]
    assert "did not complete within" in prompt and '<screen role="tester">' in prompt
    assert asked["credential_sha256"] == hashlib.sha256(KEY.encode()).hexdigest()
    assert _retry_event(store)["research"] == "research summary added"
    assert UsageStore(store).project_tokens(project["id"]) > 0


def test_without_a_model_the_retry_goes_on_with_a_one_line_note(tmp_path: Path):
    settings = Settings(state_dir=tmp_path, model_assist=True, queue_concurrency=0)
    credentials = CredentialSource({}, tmp_path / "no-login.json", "http://token", "client")
    store, _, row = _failed_run(tmp_path, settings, credentials)
    retry = Path(row["current_spec"]).read_text(encoding="utf-8")
    assert "## Previous attempt 1 failed" in retry and "Research summary" not in retry
    note = _retry_event(store)["research"]
    assert note.startswith("no research summary: no model configured: the host has no")
    assert "\n" not in note


def test_with_model_assist_off_the_retry_is_as_before(tmp_path: Path):
    settings = Settings(state_dir=tmp_path, queue_concurrency=0)
    store, _, row = _failed_run(tmp_path, settings, None)
    assert "Research summary" not in Path(row["current_spec"]).read_text(encoding="utf-8")
    assert "research" not in _retry_event(store)


def test_in_a_dry_run_the_projects_scripted_model_answers_as_role_agentvisor(tmp_path: Path):
    """A project with its own upstream (`up --model scripted`) is asked there, with the dry
    run's stand-in credential, never the host's, and the script's `agentvisor` list answers."""
    from agentvisor.core.team import plan_team

    team = [{"role": "orchestrator", "reason": "leads"}, {"role": "docs", "reason": "writes"}]
    script = {
        "agents": {
            "agentvisor": [{"tool": "propose_team", "input": {"roles": team}}],
            "*": [{"text": "not for agentvisor"}],
        }
    }
    with ModelServer(script) as model:
        store = Store(tmp_path / "db.sqlite", SystemClock())
        project = store.upsert_project("shop", str(tmp_path))
        project = store.set_project_setting(project["id"], "model", {"upstream": model.url})
        credentials = CredentialSource(
            {"ANTHROPIC_API_KEY": KEY}, tmp_path / "no-login.json", "http://token", "client"
        )
        assist = ModelAssist(Settings(state_dir=tmp_path), store, credentials)
        refinement = assist.refine_team(project, SPEC, plan_team(SPEC))
        [asked] = model.conversation()
    assert refinement.team.roles == ("orchestrator", "docs")
    assert asked["headers"]["x-agentvisor-agent"] == "shop/agentvisor"
    assert asked["credential_sha256"] != hashlib.sha256(KEY.encode()).hexdigest()
