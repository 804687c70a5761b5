"""The project queue runner: starts queued specs (one at a time by default), watches each until
its orchestrator reports the project complete or it times out, retries a failure with the
failure's context appended to the spec, and runs the escalation hook after the last retry.

It runs as a thread in the server process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentvisor.config import Settings
from agentvisor.core.failure_research import research_section
from agentvisor.core.model_replies import UnusableAnswer, one_line
from agentvisor.core.recurrence import format_duration
from agentvisor.errors import AgentvisorError
from agentvisor.store.database import Row, Store
from agentvisor.store.queue_store import QueueStore

if TYPE_CHECKING:
    from agentvisor.model.model_assist import ModelAssist
    from agentvisor.sandbox.sandboxes import SandboxBackend

log = logging.getLogger("agentvisor.queue")
PANE_TAIL_LINES = 30
EVENT_TAIL = 15


def retry_spec_text(
    original: str,
    attempt: int,
    reason: str,
    panes: dict[str, str],
    events: list[Row],
    research: str | None = None,
) -> str:
    """The spec for a retry: the original, then what went wrong last time, then the model's
    research summary of it when there is one. Pure."""
    parts = [
        original.rstrip(),
        "",
        f"## Previous attempt {attempt} failed",
        "",
        f"Reason: {reason}",
        "",
        "Start from the work already committed on your branch; avoid what went wrong.",
        "",
    ]
    if panes:
        parts += ["### Last lines of each agent's screen", ""]
        for role, text in panes.items():
            tail = "\n".join(text.rstrip().splitlines()[-PANE_TAIL_LINES:])
            parts += [f"#### {role}", "", "```text", tail.replace("```", "'''"), "```", ""]
    if events:
        parts += ["### Last events", ""]
        parts += [
            f"- {e['kind']}: {json.dumps(e.get('data') or {}, ensure_ascii=False)[:200]}"
            for e in events
        ]
        parts.append("")
    if research:
        parts += research_section(research)
    return "\n".join(parts)


@dataclass(frozen=True)
class QueuedLaunch:
    """One queued spec to bring up, with the options it was queued with."""

    spec: Path
    project_dir: Path | None
    new_project: bool
    roles: tuple[str, ...] | None
    team_type: str | None
    plan: str | None
    agent: str | None
    refine: bool


# Brings a queued spec up and gives the project's name and folder: `agentvisor.launch`'s
# `launch_queued`, handed in by whoever starts the server (the layer above; the queue runner
# never imports it).
Launcher = Callable[[Settings, QueuedLaunch, Callable[[str], None]], tuple[str, Path]]


def no_launcher(
    settings: Settings, queued: QueuedLaunch, _: Callable[[str], None]
) -> tuple[str, Path]:
    raise AgentvisorError(
        f"this server was started without a launcher and cannot run the queued spec {queued.spec}"
    )


class QueueRunner:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        launcher: Launcher = no_launcher,
        backend_factory: Callable[[], Any] | None = None,
        poll_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = QueueStore(store)
        self._launcher = launcher
        self._backend_factory = backend_factory
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # Model assist for the research step (the server sets the broker's); used only with
        # the setting model_assist on.
        self.assist: ModelAssist | None = None

    def backend(self) -> SandboxBackend:
        if self._backend_factory is not None:
            return self._backend_factory()
        from agentvisor.sandbox.sandboxes import SandboxBackend

        return SandboxBackend(self.settings)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="agentvisor-queue", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the runner must outlive any one project's trouble
                log.exception("queue pass failed")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def run_once(self) -> None:
        now = self.store.clock.now()
        running = self.queue.list("running")
        for row in running:
            self._check(row, now)
        while len(self.queue.list("running")) < self.settings.queue_concurrency:
            claimed = self.queue.claim_next(self.settings.project_timeout_minutes * 60)
            if claimed is None:
                break
            self._launch(claimed)

    def _check(self, row: Row, now: float) -> None:
        project = row["project"]
        if project:
            try:
                state = self.store.get_project(project)["state"]
            except AgentvisorError:
                state = None
            if state == "complete":
                self._stop_project(project)
                self.queue.finish(row["id"], "done")
                return
        if row["deadline_at"] and now > row["deadline_at"]:
            limit = format_duration(row["deadline_at"] - row["started_at"])
            self._fail(row, f"the project did not complete within {limit}")

    def _launch(self, row: Row) -> None:
        options = row["options"]
        try:
            queued = QueuedLaunch(
                spec=Path(row["current_spec"]),
                project_dir=Path(row["project_dir"]) if row["project_dir"] else None,
                new_project=bool(options.get("new_project")) and not row["project_dir"],
                roles=tuple(options["roles"]) if options.get("roles") else None,
                team_type=options.get("team_type"),
                plan=options.get("plan"),
                agent=options.get("agent"),
                refine=bool(options.get("refine")),
            )
            name, path = self._launcher(self.settings, queued, lambda line: log.info(line))
        except AgentvisorError as exc:
            self._fail(row, f"the sandboxes could not start: {exc.message}")
            return
        project = self.store.get_project(name)
        self.store.set_project_state(project["id"], "running")
        self.queue.update(row["id"], project=name, project_dir=str(path))
        log.info("queue entry %s running as project %s", row["id"], name)

    def _fail(self, row: Row, reason: str) -> None:
        log.warning("queue entry %s failed (attempt %s): %s", row["id"], row["attempts"], reason)
        panes: dict[str, str] = {}
        events: list[Row] = []
        project: Row | None = None
        if row["project"]:
            panes = self._pane_tails(row["project"])
            project = self.store.get_project(row["project"])
            events = list(reversed(self.store.list_events(project["id"], limit=EVENT_TAIL)))
            self._stop_project(row["project"])
            self.store.set_project_state(project["id"], "failed")
        if row["attempts"] < row["max_attempts"]:
            original = Path(row["spec_path"]).read_text(encoding="utf-8")
            research, note = self._research(project, original, reason, panes, events)
            folder = self.settings.state_dir / "queue" / str(row["id"])
            folder.mkdir(parents=True, exist_ok=True)
            retry = folder / f"spec-retry-{row['attempts']}.md"
            text = retry_spec_text(original, row["attempts"], reason, panes, events, research)
            retry.write_text(text, encoding="utf-8")
            requeued = self.queue.update(
                row["id"], state="queued", current_spec=str(retry), last_error=reason
            )
            if requeued["state"] == "cancelled":  # the operator cancelled it meanwhile
                return
            data = {"queue_id": row["id"], "reason": reason, "spec": str(retry)}
            self.store.log_event(
                "queue.retry", data={**data, **({"research": note} if note else {})}
            )
            return
        final = self.queue.finish(row["id"], "failed", reason)
        if final["state"] == "failed":  # not when the operator cancelled it meanwhile
            self._escalate(final)

    def _research(
        self,
        project: Row | None,
        spec_text: str,
        reason: str,
        panes: dict[str, str],
        events: list[Row],
    ) -> tuple[str | None, str | None]:
        """(the model's summary of the failure, a one-line note for the retry's event): no
        summary and no note with model assist off; no summary and why without a model."""
        if not self.settings.model_assist:
            return None, None
        if self.assist is None or project is None:
            why = "no model assist in this process" if project else "no project to count it"
            note = f"no research summary: {why}; retrying with the failure's context"
            log.info("%s", note)
            return None, note
        try:
            summary = self.assist.research(project, spec_text, reason, panes, events)
        except (AgentvisorError, UnusableAnswer) as exc:
            note = f"no research summary: {one_line(exc, 300)}; retrying with the failure's context"
            log.info("%s", note)
            return None, note
        return summary, "research summary added"

    def _pane_tails(self, project: str) -> dict[str, str]:
        try:
            backend = self.backend()
            return {
                s.role: backend.pane_history(project, s.role, lines=PANE_TAIL_LINES)
                for s in backend.list(project)
                if s.status == "running"
            }
        except AgentvisorError as exc:
            log.warning("could not read the panes of %s: %s", project, exc)
            return {}

    def _stop_project(self, project: str) -> None:
        try:
            self.backend().stop(project)
        except AgentvisorError as exc:  # told, not hidden: a sandbox may still be running
            log.warning("could not stop the sandboxes of %s: %s", project, exc)
            with contextlib.suppress(AgentvisorError):
                row = self.store.get_project(project)
                self.store.log_event("queue.stop_failed", row["id"], data={"error": exc.message})

    def _escalate(self, row: Row) -> None:
        command = self.settings.escalation_command
        if not command:
            return
        env = {
            **os.environ,
            "AGENTVISOR_QUEUE_ID": str(row["id"]),
            "AGENTVISOR_SPEC": row["spec_path"],
            "AGENTVISOR_PROJECT": row["project"] or "",
            "AGENTVISOR_ERROR": row["last_error"] or "",
            "AGENTVISOR_ATTEMPTS": str(row["attempts"]),
        }
        try:
            done = subprocess.run(
                shlex.split(command),
                input=json.dumps(row, default=str),
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            outcome = {"exit_code": done.returncode, "stderr": done.stderr[-500:]}
        except (OSError, subprocess.TimeoutExpired) as exc:
            outcome = {"error": str(exc)}
        self.queue.update(row["id"], escalated_at=self.store.clock.now())
        self.store.log_event("queue.escalated", data={"queue_id": row["id"], **outcome})
