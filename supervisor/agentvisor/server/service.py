"""What the host API does, apart from HTTP: validation, permissions and the store calls.

Every method takes the `Caller` first; an agent may only act in its own project and as itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from agentvisor.config import Settings
from agentvisor.core import routing
from agentvisor.core.delivery import Event, delivered_text
from agentvisor.core.recurrence import format_duration
from agentvisor.core.team import validate_role_name
from agentvisor.errors import AgentvisorError, Forbidden, InvalidInput, NotFound, TooLarge
from agentvisor.server.auth import Caller
from agentvisor.server.inbox_waiters import InboxWaiters
from agentvisor.server.metrics import Metrics
from agentvisor.server.scheduler import Fired, Scheduler
from agentvisor.store.database import AGENTVISOR, OPERATOR, Row, Store, project_settings

if TYPE_CHECKING:
    from agentvisor.server.project_queue import QueueRunner

T = TypeVar("T")

MIN_DELAY_MINUTES = 0.01
MAX_DELAY_MINUTES = 366 * 24 * 60
MAX_IDEMPOTENCY_KEY = 200
# A check-in's due_at may lie at most this far in the past (it then fires at once, saying how
# late) and at most MAX_DELAY_MINUTES ahead: a clock or a unit gone wrong (0, -1e308,
# milliseconds) is refused, not fired with a 300-digit "late by".
MAX_DUE_AGO_S = 24 * 3600.0
# A usage limit resets within a week (Claude's weekly limit is the longest).
MAX_USAGE_PAUSE_S = 8 * 24 * 3600.0
MAX_INFO_BYTES = 16 * 1024
MAX_STATE_CHARS = 40
_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,39}")


class UsageLimitSource(StrEnum):
    """Who saw a usage limit: the agent's shim on its screen, or the model broker."""

    SCREEN = "screen"
    BROKER = "broker"

    def describe(self, role: str) -> str:
        if self is UsageLimitSource.BROKER:
            return f"the model API answered {role}'s request with 429"
        return f"{role}'s sandbox reported a usage-limit notice on its screen"


@dataclass
class Service:
    settings: Settings
    store: Store
    scheduler: Scheduler | None
    waiters: InboxWaiters
    metrics: Metrics
    queue_runner: QueueRunner | None = None  # set by the server

    # -- helpers ---------------------------------------------------------------------------
    def project_for(self, caller: Caller, project: str | None) -> Row:
        """The project a request is about: the agent's own, or the one the operator names (or
        the only one there is)."""
        if caller.agent is not None:
            own = self.store.get_project_by_id(caller.agent["project_id"])
            if project and project != own["name"]:
                raise Forbidden(
                    f"an agent of project '{own['name']}' cannot act on project '{project}'"
                )
            return own
        if project:
            return self.store.get_project(project)
        projects = self.store.list_projects()
        if len(projects) == 1:
            return projects[0]
        known = ", ".join(p["name"] for p in projects) or "none yet"
        raise InvalidInput(f"say which project this is about (known projects: {known})")

    def listing_scope(self, caller: Caller, project: str | None) -> int | None:
        """The project id a listing is limited to: an agent's own, the one the operator names,
        or None (every project) for an operator who names none."""
        if project or caller.agent is not None:
            return int(self.project_for(caller, project)["id"])
        return None

    def _recipient(self, project: Row, role: str) -> Row:
        validate_role_name(role)
        return self.store.get_agent(project["id"], role)

    def _text(self, value: str, what: str, limit: int) -> str:
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"the {what} is empty: give some text")
        size = len(value.encode("utf-8"))
        if size > limit:
            raise TooLarge(
                f"the {what} is {size} bytes, over the limit of {limit} bytes; "
                "split it or put it in a file in the worktree and send the path"
            )
        if "\x00" in value:
            raise InvalidInput(f"the {what} contains a NUL character, which cannot be typed")
        return value

    @staticmethod
    def _key(key: str | None) -> str | None:
        if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY):
            raise InvalidInput(f"idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
        return key

    def _notify(self, agent_ids: Iterable[int]) -> None:
        """Wake these agents' long polls once the current write is durable: a poll woken
        before the commit would look at the inbox too early and wait again."""
        ids = list(agent_ids)
        self.store.after_commit(lambda: self.waiters.notify(ids))

    async def write(self, fn: Callable[[], T]) -> T:
        """Run `fn`, a call of this service that writes, on the store's writer thread and
        await it from the event loop; it returns only once its write is durable."""
        return await asyncio.wrap_future(self.store.submit(fn))

    def notify_fired(self, fired: list[Fired]) -> None:
        self.metrics.inc("checkins_fired", len(fired))
        self._notify({f.message["recipient_id"] for f in fired})

    # -- messages --------------------------------------------------------------------------
    def send(
        self,
        caller: Caller,
        to: str,
        body: str,
        kind: str = "message",
        idempotency_key: str | None = None,
        project: str | None = None,
    ) -> tuple[Row, bool]:
        proj = self.project_for(caller, project)
        recipient = self._recipient(proj, to)
        self._text(body, "message body", self.settings.max_body_bytes)
        if not _KIND.fullmatch(kind or ""):
            raise InvalidInput(f"message kind '{kind}' is not valid: use a short lowercase word")
        policy = self.routing(proj)
        if caller.agent is not None:
            refused = routing.refusal(policy, caller.name, recipient["role"])
            if refused:
                raise Forbidden(refused)
        # The message, its copies and its event in one transaction: one commit, all or none.
        with self.store.transaction():
            message, created = self.store.add_message(
                proj["id"], caller.name, recipient["id"], body, kind, self._key(idempotency_key)
            )
            if not created:
                return message, created
            notify = [recipient["id"]]
            copies = (
                routing.copy_roles(policy, caller.name, recipient["role"], kind, body)
                if caller.agent is not None
                else []
            )
            for role in copies:
                notify += self._copy(proj, message, caller.name, recipient["role"], role)
            self.store.log_event(
                "message.sent",
                proj["id"],
                caller.agent["id"] if caller.agent else None,
                {"id": message["id"], "from": caller.name, "to": recipient["role"], "kind": kind,
                 "copied_to": copies},
            )  # fmt: skip
        self.metrics.inc("messages_accepted")
        self._notify(notify)
        return message, created

    def routing(self, project: Row) -> routing.RoutingPolicy:
        """The project's routing policy: the settings', with the project's own over it."""
        default = routing.RoutingPolicy(
            self.settings.routing_copy_to,
            self.settings.routing_copy_kinds,
            self.settings.routing_copy_patterns,
            self.settings.routing_hub_only,
        )
        return routing.policy_from(default, project_settings(project).get("routing"))

    def set_routing(self, caller: Caller, name: str, changes: dict[str, Any]) -> Row:
        caller.require_operator()
        project = self.project_for(caller, name)
        own = {**(project_settings(project).get("routing") or {}), **changes}
        updated = self.store.set_project_setting(project["id"], "routing", own)
        return {"project": updated["name"], **self.routing(updated).as_dict()}

    def _copy(self, project: Row, original: Row, sender: str, to: str, role: str) -> list[int]:
        """A copy of `original` for `role` (once per original), if the project has that role."""
        try:
            hub = self.store.get_agent(project["id"], role)
        except NotFound:
            return []
        self.store.add_message(
            project["id"],
            sender,
            hub["id"],
            routing.copy_body(sender, to, original["body"]),
            "copy",
            f"copy-{original['id']}-{role}",
        )
        return [hub["id"]]

    def done(self, caller: Caller, summary: str) -> Row:
        agent = caller.require_agent()
        self._text(summary, "summary", self.settings.max_body_bytes)
        project = self.store.get_project_by_id(agent["project_id"])
        self.store.log_event("agent.done", project["id"], agent["id"], {"summary": summary})
        self.metrics.inc("completions")
        if agent["role"] == "orchestrator":
            # The orchestrator reports to the operator: its report is the project's outcome.
            self.store.update_agent(agent["id"], state="done")
            if summary.strip().upper().startswith("PROJECT COMPLETE"):
                self.store.set_project_state(project["id"], "complete")
            return {"recipient": OPERATOR, "body": summary, "state": "logged"}
        orchestrator = self.store.get_agent(project["id"], "orchestrator")
        body = f"Completion report from {agent['role']}: {summary}"
        message, _ = self.store.add_message(
            project["id"], agent["role"], orchestrator["id"], body, kind="completion"
        )
        self._notify([orchestrator["id"]])
        return message

    def messages(
        self,
        caller: Caller,
        project: str | None,
        recipient: str | None,
        state: str | None,
        limit: int,
    ) -> list[Row]:
        scope = self.listing_scope(caller, project)
        recipient_id = None
        if recipient:
            proj = self.project_for(caller, project)
            scope = proj["id"]
            recipient_id = self._recipient(proj, recipient)["id"]
        party = None
        if caller.agent is not None and not self.settings.agents_read_team_messages:
            party = (int(caller.agent["id"]), str(caller.agent["role"]))
        return self.store.list_messages(scope, recipient_id, state, _limit(limit), party=party)

    def change_message(self, caller: Caller, message_id: int, action: str) -> Row:
        caller.require_operator()
        event = {"cancel": Event.CANCEL, "retry": Event.RETRY}.get(action)
        if event is None:
            raise InvalidInput(f"unknown action '{action}': use cancel or retry")
        message = self.store.set_message_state(message_id, event, None)
        if event == Event.RETRY:
            self._notify([message["recipient_id"]])
        return message

    # -- check-ins -------------------------------------------------------------------------
    def schedule(
        self,
        caller: Caller,
        note: str,
        minutes: float | None = None,
        due_at: float | None = None,
        to: str | None = None,
        every_minutes: float | None = None,
        idempotency_key: str | None = None,
        project: str | None = None,
    ) -> tuple[Row, bool]:
        proj = self.project_for(caller, project)
        if to is None:
            if caller.agent is None:
                raise InvalidInput("say who the check-in is for: give 'to' (a role)")
            to = caller.agent["role"]
        recipient = self._recipient(proj, to)
        if caller.agent is not None and recipient["role"] != caller.agent["role"]:
            # A check-in for a peer fires as a message from this agent: the same rule.
            refused = routing.refusal(self.routing(proj), caller.name, recipient["role"])
            if refused:
                raise Forbidden(refused)
        self._text(note, "check-in note", self.settings.max_note_bytes)
        now = self.store.clock.now()
        if (minutes is None) == (due_at is None):
            raise InvalidInput(
                "give exactly one of 'minutes' (a delay) or 'due_at' (epoch seconds)"
            )
        for name, value in (
            ("minutes", minutes),
            ("due_at", due_at),
            ("every_minutes", every_minutes),
        ):
            if value is not None and not math.isfinite(value):
                raise InvalidInput(f"{name} must be a finite number, not {value}")
        if minutes is not None:
            if not MIN_DELAY_MINUTES <= minutes <= MAX_DELAY_MINUTES:
                raise InvalidInput(
                    f"a delay of {minutes} minutes is not allowed: use "
                    f"{MIN_DELAY_MINUTES} to {MAX_DELAY_MINUTES} minutes"
                )
            due_at = now + minutes * 60.0
        assert due_at is not None
        if due_at > now + MAX_DELAY_MINUTES * 60:
            raise InvalidInput("that check-in is more than a year away; schedule it nearer")
        if due_at < now - MAX_DUE_AGO_S:
            raise InvalidInput(
                f"due_at {due_at:.0f} is {format_duration(now - due_at)} in the past; give a time "
                "at most a day ago (epoch seconds, not milliseconds), or 'minutes' for a delay"
            )
        every_s = None
        if every_minutes is not None:
            shortest = self.settings.min_every_minutes
            if not shortest <= every_minutes <= MAX_DELAY_MINUTES:
                raise InvalidInput(
                    f"every {every_minutes} minutes is not allowed: use "
                    f"{shortest:g} to {MAX_DELAY_MINUTES} minutes"
                )
            every_s = every_minutes * 60.0
        checkin, created = self.store.add_checkin(
            proj["id"],
            caller.name,
            recipient["id"],
            note,
            due_at,
            every_s,
            self._key(idempotency_key),
            created_by=None if caller.agent is None else int(caller.agent["id"]),
        )
        if created and self.scheduler is not None:
            self.scheduler.wake(checkin["due_at"])
        return checkin, created

    def checkins(
        self, caller: Caller, project: str | None, state: str | None, limit: int = 200
    ) -> list[Row]:
        party = None
        if caller.agent is not None and not self.settings.agents_read_team_messages:
            party = int(caller.agent["id"])
        return self.store.list_checkins(
            self.listing_scope(caller, project),
            state or None,
            limit=_limit(limit, 1000),
            party=party,
        )

    def cancel_checkin(self, caller: Caller, checkin_id: int) -> Row:
        """The operator may cancel any check-in; an agent only one it scheduled itself, never
        the operator's (routine check-ins, commit reminders) nor agentvisor's."""
        if caller.agent is not None:
            checkin = self.store.get_checkin(checkin_id)
            if checkin["project_id"] != caller.project_id:
                raise NotFound(f"no check-in with id {checkin_id} in this project")
            if checkin["created_by"] != caller.agent["id"]:
                raise Forbidden(
                    f"check-in {checkin_id} was scheduled by {_scheduled_by(checkin)}; "
                    "an agent may cancel only the check-ins it scheduled itself"
                )
        return self.store.cancel_checkin(checkin_id, caller.project_id)

    # -- the shim's inbox ------------------------------------------------------------------
    def lease(self, caller: Caller) -> Row | None:
        """The agent's next message, leased; none while its project is stopped (`down`): a
        message sent then waits, queued and cancellable, for `resume`."""
        agent = caller.require_agent()
        if self.store.get_project_by_id(agent["project_id"])["state"] == "stopped":
            return None
        return self.store.lease_next(agent["id"], self.settings.lease_s, self.settings.max_attempts)

    def ack(self, caller: Caller, message_id: int, lease_id: str) -> Row:
        agent = caller.require_agent()
        before = self.store.get_message(message_id)
        message = self.store.ack(agent["id"], message_id, lease_id)
        if before["state"] != "delivered":
            self.metrics.inc("deliveries", labels={"state": "delivered"})
            self.metrics.observe_delivery_latency(
                max(0.0, (message["delivered_at"] or 0) - message["created_at"])
            )
            self._notify([agent["id"]])
        return message

    def ack_and_lease(
        self, caller: Caller, message_id: int, lease_id: str
    ) -> tuple[Row, Row | None]:
        """Ack a delivered message and lease the agent's next one, in one transaction: the
        ack stands even when the lease fails (it then comes by the next long poll). A lease
        the agent already holds is handed out again: the answer that carried it was lost (the
        shim asks once more), and without it the message would wait for its lease to run out."""
        acked = self.ack(caller, message_id, lease_id)
        try:
            with self.store.transaction():
                leased = self.lease(caller)
                if leased is None:
                    leased = self.store.held_lease(caller.require_agent()["id"])
                return acked, leased
        except AgentvisorError:
            return acked, None

    def nack(self, caller: Caller, message_id: int, lease_id: str, reason: str, retry: bool) -> Row:
        agent = caller.require_agent()
        message = self.store.nack(
            agent["id"], message_id, lease_id, reason[:2000], retry, self.settings.max_attempts
        )
        self.metrics.inc("deliveries", labels={"state": message["state"]})
        self._notify([agent["id"]])
        return message

    def extend(self, caller: Caller, message_id: int, lease_id: str) -> Row:
        agent = caller.require_agent()
        return self.store.extend_lease(agent["id"], message_id, lease_id, self.settings.lease_s)

    def release(self, caller: Caller) -> int:
        """A new shim takes back its agent's leases (and ends a dead shim's open poll)."""
        return self._release(caller.require_agent())

    def release_project(self, caller: Caller, name: str) -> int:
        """The operator's release of every lease of a project whose sandboxes stopped."""
        caller.require_operator()
        project = self.project_for(caller, name)
        return sum(self._release(a) for a in self.store.list_agents(project["id"]))

    def _release(self, agent: Row) -> int:
        self.waiters.supersede([agent["id"]])
        released = self.store.release_leases(agent["id"])
        if released:
            self.store.log_event(
                "inbox.released", agent["project_id"], agent["id"], {"messages": released}
            )
            self._notify([agent["id"]])
        return released

    def inbox(self, caller: Caller) -> list[Row]:
        return self.store.pending_messages(caller.require_agent()["id"])

    def heartbeat(
        self, caller: Caller, state: str | None, info: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Record a sign of life. The answer may ask the shim to nudge a stalled agent."""
        agent = caller.require_agent()
        now = self.store.clock.now()
        fields: dict[str, Any] = {}
        if state:
            if len(state) > MAX_STATE_CHARS:
                raise InvalidInput(f"state must be at most {MAX_STATE_CHARS} characters")
            fields["state"] = state
        if info:
            stored = json.dumps(info, ensure_ascii=False, separators=(",", ":"))
            size = len(stored.encode("utf-8"))
            if size > MAX_INFO_BYTES:
                # Refused whole: a cut would store broken JSON.
                raise TooLarge(
                    f"heartbeat info is {size} bytes as JSON, over the limit of "
                    f"{MAX_INFO_BYTES} bytes; send less"
                )
            previous = _stored_info(agent["info"])
            if info.get("pane_hash") != previous.get("pane_hash") or not agent["pane_changed_at"]:
                fields["pane_changed_at"] = now
            fields["info"] = stored
        nudge = bool(agent["nudge_at"])
        if nudge:
            fields["nudge_at"] = None
        # A heartbeat that changes nothing writes nothing, unless the stored sign of life is
        # getting old: idle sandboxes then cost the server no fsync every few seconds.
        changed = any(agent.get(key) != value for key, value in fields.items())
        seen = agent.get("last_seen_at")
        if changed or seen is None or now - seen >= self.settings.heartbeat_timeout_s / 3:
            self.store.touch_agent(agent["id"], **fields)
        return {"ok": True, "nudge": nudge}

    # -- agents, projects, events ----------------------------------------------------------
    def set_project_state(self, caller: Caller, name: str, state: str) -> Row:
        """The operator's word on where a project stands: `up` and `resume` say running,
        `down` stopped; the orchestrator's report says complete, the queue failed."""
        caller.require_operator()
        project = self.project_for(caller, name)
        if project["state"] != state:
            self.store.set_project_state(project["id"], state)
        return self.store.get_project_by_id(project["id"])

    def set_project_model(
        self, caller: Caller, name: str, upstream: str | None, script: str | None
    ) -> Row:
        """The project's own model upstream (a dry run's scripted model server on this host's
        loopback), or None for the settings' `model_upstream` with the host's credential."""
        caller.require_operator()
        project = self.project_for(caller, name)
        value = None if upstream is None else {"upstream": upstream, "script": script}
        return self.store.set_project_setting(project["id"], "model", value)

    def register_agent(
        self, caller: Caller, project: str, role: str, profile: str
    ) -> tuple[Row, str]:
        caller.require_operator()
        validate_role_name(role)
        proj = self.store.get_project(project)
        return self.store.register_agent(proj["id"], role, profile)

    def agents(self, caller: Caller, project: str | None) -> list[Row]:
        if caller.agent is not None or project:
            return self.store.list_agents(self.project_for(caller, project)["id"])
        return self.store.list_agents()

    def event(self, caller: Caller, kind: str, data: dict[str, Any] | None) -> Row:
        agent = caller.require_agent()
        if not _KIND.fullmatch(kind or ""):
            raise InvalidInput(f"event kind '{kind}' is not valid: use a short lowercase word")
        reset_at = None
        if kind == "usage_limit":
            reset_at = self._reset_time((data or {}).get("paused_until"))
        event = self.store.log_event(f"agent.{kind}", agent["project_id"], agent["id"], data)
        if kind == "usage_limit":
            # The agent's own `notice` stays in the event for the operator; what the
            # orchestrator is told is composed here and names no text of the agent's.
            self.pause_for_usage_limit(agent, reset_at, UsageLimitSource.SCREEN)
        return event

    def _reset_time(self, value: Any) -> float | None:
        """A usage_limit event's `paused_until`: absent/null (unknown), or epoch seconds that
        are finite and within a day ago to MAX_USAGE_PAUSE_S ahead; anything else is refused
        before the event is recorded or the agent paused."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput("data.paused_until must be epoch seconds (a number) or null")
        now = self.store.clock.now()
        if not math.isfinite(value) or not (
            now - MAX_DUE_AGO_S <= value <= now + MAX_USAGE_PAUSE_S
        ):
            raise InvalidInput(
                "data.paused_until must be epoch seconds between a day ago and "
                f"{MAX_USAGE_PAUSE_S / 86400:.0f} days ahead"
            )
        return float(value)

    def pause_for_usage_limit(self, agent: Row, reset_at: Any, source: UsageLimitSource) -> float:
        """Hold the agent's deliveries until its usage limit resets (plus a margin), then tell
        it to continue: a check-in at that time does both, as nothing is leased before it.
        Both that check-in and the orchestrator's notice come from `agentvisor`, with text
        composed here: nothing an agent wrote is relayed."""
        now = self.store.clock.now()
        try:
            reset = float(reset_at)
        except (TypeError, ValueError):
            reset = math.nan
        if not math.isfinite(reset):
            reset = now + 5 * 3600  # the notice named no time we could read: the longest window
        # However the time was reported (the broker reads it from upstream headers), the pause
        # ends within a week.
        resume_at = min(max(reset, now), now + MAX_USAGE_PAUSE_S)
        resume_at += self.settings.usage_limit_margin_s
        # The broker and the pane may both report the same limit: one pause, one resume.
        current = self.store.get_agent_by_id(agent["id"])
        if (
            current.get("paused_reason") == "usage_limit"
            and (current["paused_until"] or 0) > now
            and abs(current["paused_until"] - resume_at) < 120
        ):
            return float(current["paused_until"])
        self.store.update_agent(
            agent["id"], paused_until=resume_at, state="paused", paused_reason="usage_limit"
        )
        self.store.add_checkin(
            agent["project_id"],
            AGENTVISOR,
            agent["id"],
            "Your usage limit has reset. Continue where you left off.",
            resume_at,
            idempotency_key=f"usage-resume-{agent['id']}-{int(resume_at // 60)}",
        )
        if self.scheduler is not None:
            self.scheduler.wake(resume_at)
        if agent["role"] != "orchestrator":
            with contextlib.suppress(AgentvisorError):
                orchestrator = self.store.get_agent(agent["project_id"], "orchestrator")
                self.store.add_message(
                    agent["project_id"],
                    AGENTVISOR,
                    orchestrator["id"],
                    f"{agent['role']} hit its usage limit ({source.describe(agent['role'])}); "
                    f"its messages are held until it resumes in "
                    f"{format_duration(resume_at - now)}.",
                    kind="notice",
                    idempotency_key=f"usage-notice-{agent['id']}-{int(resume_at // 60)}",
                )
                self._notify([orchestrator["id"]])
        self.metrics.inc("usage_limit_pauses")
        return resume_at

    def events(self, caller: Caller, project: str | None, limit: int) -> list[Row]:
        # An agent's view, unless opted in: its own events (others' hold their summaries).
        own = None
        if caller.agent is not None and not self.settings.agents_read_team_messages:
            own = int(caller.agent["id"])
        return self.store.list_events(
            self.listing_scope(caller, project), _limit(limit, 1000), agent_id=own
        )

    # -- the project queue -----------------------------------------------------------------
    def queue_add(
        self, caller: Caller, spec_path: str, project_dir: str | None, options: dict[str, Any]
    ) -> Row:
        caller.require_operator()
        from agentvisor.core.spec import load_spec
        from agentvisor.store.queue_store import QueueStore

        spec = load_spec(spec_path)  # refuse a bad spec now, not when its turn comes
        row = QueueStore(self.store).add(
            str(spec.path), project_dir, options, 1 + self.settings.queue_retries
        )
        if self.queue_runner is not None:
            self.queue_runner.wake()
        return row

    def queue_list(self, caller: Caller, state: str | None) -> list[Row]:
        caller.require_operator()
        from agentvisor.store.queue_store import QueueStore

        return QueueStore(self.store).list(state or None)

    def queue_get(self, caller: Caller, queue_id: int) -> Row:
        caller.require_operator()
        from agentvisor.store.queue_store import QueueStore

        return QueueStore(self.store).get(queue_id)

    def queue_cancel(self, caller: Caller, queue_id: int) -> Row:
        caller.require_operator()
        from agentvisor.store.queue_store import QueueStore

        return QueueStore(self.store).cancel(queue_id)

    def typed_text(self, message: Row) -> str:
        return delivered_text(message["marker"], message["body"], message["sender"])


def _scheduled_by(checkin: Row) -> str:
    if checkin["created_by"] is None:
        return "agentvisor" if checkin["creator"] == AGENTVISOR else "the operator"
    return f"another agent ({checkin['creator']})"


def _stored_info(text: str | None) -> dict[str, Any]:
    """An agent's last heartbeat info; {} when what is stored is not a JSON object (an older
    agentvisor cut long info mid-JSON), so the next heartbeat replaces it instead of failing."""
    try:
        info = json.loads(text or "{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _limit(limit: int, most: int = 500) -> int:
    if not 1 <= limit <= most:
        raise InvalidInput(f"limit must be between 1 and {most}")
    return limit


def require_found(row: Row | None, what: str) -> Row:
    if row is None:
        raise NotFound(f"{what} not found")
    return row
