"""The daemon: keeps the agent CLI running in its tmux pane and types the messages leased
from the host API into it, each exactly once (docs/delivery.md), with a heartbeat beside.
For a CLI that reports its turns through hooks (Claude Code), the receipts say when a turn
ends and confirm a submitted prompt; the screen is read for the rest and as the fallback.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from types import FrameType

from agent_shim import screen
from agent_shim.client import ApiClient, ApiError, ClientError, Lease
from agent_shim.config import ShimConfig
from agent_shim.journal import DeliveryJournal
from agent_shim.pane import AgentPane, PaneError
from agent_shim.receipts import Receipts
from agent_shim.session import AgentSession
from agent_shim.text import marker_token

log = logging.getLogger("agent_shim")

BUSY_POLL_S = 0.25  # how long one step waits for a busy agent's prompt
BUSY_LOOK_S = 0.05  # how often, at most, a busy agent's screen is looked at as it writes
USAGE_LIMIT_POLL_S = 5.0
HEARTBEAT_QUIET_FACTOR = 2  # an unchanged heartbeat is sent every second interval
DEAD_AGENT_POLL_S = 0.5
LEASE_MARGIN_S = 5.0  # stop waiting for the agent this long before the lease runs out
SUBMIT_TIMEOUT_S = 5.0  # the text must leave the input box this long after the submit key
# Agent CLIs take keys that arrive right after a burst of typed or pasted text for part of
# that paste (Codex: within 120 ms), so an Enter sent too soon is a newline, not a submit.
SETTLE_TIMEOUT_S = 3.0
# A turn whose end no hook reported (interrupted with Esc, the CLI restarted) is taken as over
# once the screen has shown the idle prompt this long.
TURN_STALE_S = 20.0
TYPED_KEPT = 20  # bodies remembered as typed (the screen shows a few at most)


class Backoff:
    """Delays of 100 ms doubling up to 5 s, back to 100 ms after a success."""

    def __init__(self, initial_s: float = 0.1, maximum_s: float = 5.0) -> None:
        self.initial_s, self.maximum_s = initial_s, maximum_s
        self._next_s = initial_s

    def next(self) -> float:
        delay, self._next_s = self._next_s, min(self._next_s * 2, self.maximum_s)
        return delay

    def reset(self) -> None:
        self._next_s = self.initial_s


class StateLog:
    """Logs a line when the state of a topic changes, not once per attempt."""

    def __init__(self) -> None:
        self._states: dict[str, str] = {}
        self._lock = threading.Lock()

    def report(
        self, topic: str, state: str, message: str, *args: object, level: int = logging.INFO
    ) -> None:
        with self._lock:
            if self._states.get(topic) == state:
                return
            first = topic not in self._states
            self._states[topic] = state
        if not (first and state == "ok"):
            log.log(level, message, *args)


class _Shutdown(Exception):
    """Raised by the signal handler to leave a long poll at once."""


class Shim:
    def __init__(
        self,
        config: ShimConfig,
        client: ApiClient,
        session: AgentSession,
        journal: DeliveryJournal,
        clock: Callable[[], float] = time.time,
        receipts: Receipts | None = None,
    ) -> None:
        self.config = config
        self.profile = config.profile
        self.client = client
        self.session = session
        self.journal = journal
        self._clock = clock
        self._stop = threading.Event()
        self._in_long_poll = False
        self._states = StateLog()
        self._gate = screen.UsageLimitGate(self.profile)
        # The bodies typed lately: a usage-limit notice quoted in one is not the agent's own.
        self._typed: deque[str] = deque(maxlen=TYPED_KEPT)
        self._usage_limited = False
        self._submit_tried: set[str] = set()
        self._nudge = threading.Event()  # asked for by the server in a heartbeat answer
        self._agent_started = False  # the session exists (heartbeats say "starting" before)
        self.receipts = receipts  # what the CLI's hooks reported, None for a CLI without hooks
        self._idle_screen_since: float | None = None  # the prompt shown during an open turn

    # Life cycle.

    def run(self) -> int:
        if not self.session.server.is_alive():
            self.session.wait_for_server(self.config.tmux_server_wait_s)
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        heartbeat.start()
        self._release_old_leases()
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                delay = self._step()
                backoff.reset()
            except _Shutdown:
                break
            except ClientError as error:
                self._report_api_error(error)
                delay = backoff.next()
            except PaneError as error:
                self._states.report(
                    "tmux", "error", "tmux: %s; retrying", error, level=logging.WARNING
                )
                delay = backoff.next()
            except Exception:
                # A bug, not a condition: say so loudly, and keep serving the agent.
                log.exception("unexpected error; retrying")
                delay = backoff.next()
            self._stop.wait(delay)
        self._stop.set()
        heartbeat.join(timeout=2.0)
        log.info("stopped")
        return 0

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            self._stop.set()
            if self._in_long_poll:  # nothing leased yet: leave the poll now
                raise _Shutdown

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def _report_api_error(self, error: ClientError) -> None:
        if isinstance(error, ApiError):
            self._states.report(
                "api",
                f"http {error.status}",
                "host API error: %s; retrying",
                error,
                level=logging.WARNING,
            )
        else:
            self._states.report(
                "api", "down", "%s; retrying until it answers", error, level=logging.WARNING
            )

    # One turn of the loop: returns how long to wait before the next.

    def _step(self) -> float:
        pane = self.session.ensure()
        self._states.report("tmux", "ok", "tmux answers again")
        self._agent_started = True
        if pane is None:
            return DEAD_AGENT_POLL_S
        lines = pane.capture_screen()
        if self._usage_limit_holds(lines):
            return USAGE_LIMIT_POLL_S
        pending = screen.pending_marker(self.profile, lines)
        if (
            pending is not None
            and pending not in self._submit_tried
            and not self._hook_confirmed(pending)
        ):
            # Typed by a shim that died before the submit key: finish its work once.
            log.info(
                "%s is in the input box but was never submitted; submitting it",
                marker_token(pending),
            )
            self._submit(pane, marker_token(pending))
            return 0.0
        ready = self._ready(lines)
        if self._nudge.is_set():
            self._nudge.clear()
            if not ready:
                # The server saw this screen unchanged for long while messages wait.
                log.warning(
                    "nudging the agent: no prompt for a long while and messages waiting; "
                    "sending %s",
                    " ".join(self.profile.submit_keys),
                )
                pane.send_keys(*self.profile.submit_keys)
                return BUSY_POLL_S
        if not ready:
            # Woken by the pane's output (its control connection), so the next message goes
            # as soon as the prompt is back, not at the next poll.
            pane.wait_until(
                self._ready, BUSY_POLL_S, min_interval_s=BUSY_LOOK_S, poll_s=BUSY_POLL_S
            )
            return 0.0
        self._in_long_poll = True
        try:
            if self._stop.is_set():
                return 0.0
            lease = self.client.lease(self.config.lease_wait_s)
        finally:
            self._in_long_poll = False
        self._states.report("api", "ok", "host API reachable again")
        while lease is not None and not self._stop.is_set():
            lease = self._deliver(pane, lease)
        return 0.0

    def _ready(self, lines: list[str]) -> bool:
        """The agent takes input: its ready prompt is on screen and, when its hooks report
        turns, no turn is open (a prompt submitted without its Stop yet)."""
        if not screen.is_ready(self.profile, lines):
            self._idle_screen_since = None
            return False
        if self.receipts is None:
            return True
        turn = self.receipts.refresh()
        if not turn.in_turn:
            self._idle_screen_since = None
            return True
        now = self._clock()
        if self._idle_screen_since is None:
            self._idle_screen_since = now
        quiet_since = max(self._idle_screen_since, turn.turn_started_at or 0.0)
        if now - quiet_since < TURN_STALE_S:
            return False
        self._states.report(
            "turn",
            f"stale {turn.turn_started_at}",
            "no hook reported the end of the turn begun at %s, but the prompt has been idle "
            "for %.0f s; taking the turn as over",
            turn.turn_started_at,
            TURN_STALE_S,
            level=logging.WARNING,
        )
        return True

    def _hook_confirmed(self, marker: str) -> bool:
        """Whether the CLI's prompt hook reported the prompt with this marker submitted."""
        return self.receipts is not None and self.receipts.refresh().was_submitted(marker)

    def _usage_limit_holds(self, lines: list[str]) -> bool:
        now = datetime.fromtimestamp(self._clock()).astimezone()
        held = self._gate.observe(lines, now, self._typed)
        if held and not self._usage_limited:
            until = self._gate.paused_until
            log.warning(
                "usage limit on screen (%s); holding deliveries until %s",
                self._gate.notice,
                until.isoformat(timespec="minutes") if until else "?",
            )
            # The server holds the agent's messages until `paused_until` plus its own margin
            # (or for the longest window when it is null) and then tells the agent to go on.
            reset = self._gate.reset_at
            self._post_event(
                "usage_limit",
                {"notice": self._gate.notice, "paused_until": reset.timestamp() if reset else None},
            )
        elif not held and self._usage_limited:
            log.info("usage limit over; delivering again")
        self._usage_limited = held
        return held

    def _release_old_leases(self) -> None:
        """A shim that died holding a lease would block its agent's inbox until the lease ran
        out; this one is the agent's only shim now, so it takes them back at once."""
        try:
            released = self.client.release()
        except ClientError as error:
            log.info("old leases not released (%s); they will run out", error)
            return
        if released:
            log.info("took back %s message(s) leased by a previous shim", released)

    # Delivery.

    def _deliver(self, pane: AgentPane, lease: Lease) -> Lease | None:
        """Deliver one leased message; the next one, when it came leased with the ack."""
        marker, token = lease.marker, marker_token(lease.marker)
        witness = "journal" if marker in self.journal else None
        if witness is None and self._hook_confirmed(marker):
            witness = "hook receipt"
        # A first lease was never typed: the whole history (up to 100,000 lines) is only
        # searched for a message handed out before.
        if witness is None and not lease.first_lease and pane.pane_contains(marker):
            witness = "pane history"
        if witness:
            # Typed before (a shim that died before its ack, or a lease that ran out).
            if screen.pending_marker(self.profile, pane.capture_screen()) == marker:
                self._submit(pane, token)
            log.info(
                "message %s %s was typed before (%s); acking without typing it again",
                lease.message_id,
                token,
                witness,
            )
            return self._ack(lease, pane)
        wait_s = min(
            self.config.ready_timeout_s, lease.lease_expires_at - self._clock() - LEASE_MARGIN_S
        )
        # A CLI that exits meanwhile never shows its prompt in this pane: the message goes back
        # at once and comes again after the restart, not after the whole ready timeout.
        if not pane.wait_until(self._ready, max(wait_s, 0.0), until_exit=True):
            self._nack(
                lease,
                "the agent CLI exited before the message was typed; it comes again after the "
                "CLI's restart"
                if pane.is_dead()
                else f"the agent did not show its ready prompt within {wait_s:.0f} s",
            )
            return None
        pane.type_message(marker, lease.body, lease.sender)
        self._typed.append(lease.body)
        verify_s = self.config.verify_timeout_s
        if not pane.wait_shown(marker, lease.body, verify_s):
            self._nack(lease, f"the typed text did not show in the pane within {verify_s:.0f} s")
            return None
        # From here the text is in the pane: record it before anything else can fail.
        self.journal.record(marker)
        self._test_crash("before-submit")
        if not self._submit(pane, token):
            self._nack(lease, "the agent kept the text in its input box after the submit key")
            return None
        self._test_crash("after-submit")
        return self._ack(lease, pane)

    def _submit(self, pane: AgentPane, token: str) -> bool:
        """Send the submit keys once the screen has been still for the profile's `settle_s`;
        again if the text stays in the input box (the CLI took the first key for part of the
        paste). Submitted: when the CLI's hooks work, its prompt hook reported the marker;
        otherwise (and as the fallback) the text left the input box."""
        marker = token[1:-1]
        self._submit_tried.add(marker)
        hooks = self.receipts is not None and self.receipts.refresh().seen

        def left_input(lines: list[str]) -> bool:
            return screen.pending_marker(self.profile, lines) != marker

        def submitted(lines: list[str]) -> bool:
            return self._hook_confirmed(marker) or (not hooks and left_input(lines))

        if self.profile.settle_s > 0:
            pane.wait_until_stable(SETTLE_TIMEOUT_S, self.profile.settle_s)
        for _ in range(2):
            pane.send_keys(*self.profile.submit_keys)
            if pane.wait_until(submitted, SUBMIT_TIMEOUT_S, until_exit=True):
                if hooks:
                    log.info("%s submitted: the prompt hook confirmed it", token)
                return True
            if pane.is_dead():  # the CLI died: no use waiting or pressing the key again
                log.warning("the agent CLI exited before %s was submitted", token)
                return False
            if hooks and left_input(pane.capture_screen()):
                log.warning("%s left the input box but no prompt hook reported it", token)
                return True
            log.warning("%s still in the input box after the submit key", token)
        return False

    def _takes_next(self, pane: AgentPane) -> bool:
        """Whether the agent would take its next message now (the checks of `_step`): then the
        ack brings it leased, and no long poll is needed for it."""
        if self._stop.is_set() or self._nudge.is_set():
            return False
        try:
            lines = pane.capture_screen()
        except PaneError:
            return False
        return (
            not self._usage_limit_holds(lines)
            and screen.pending_marker(self.profile, lines) is None
            and self._ready(lines)
        )

    def _ack(self, lease: Lease, pane: AgentPane | None = None) -> Lease | None:
        """Ack a delivered message (retried while the lease holds). With `pane`, when the agent
        is ready again, the agent's next message comes leased with the ack."""
        take_next = pane is not None and self._takes_next(pane)
        backoff = Backoff()
        while True:
            try:
                following = None
                if take_next:
                    following = self.client.ack_and_lease(lease.message_id, lease.lease_id)
                else:
                    self.client.ack(lease.message_id, lease.lease_id)
                log.info("delivered message %s [%s]", lease.message_id, lease.marker)
                return following
            except ApiError as error:
                # The lease ran out: the message comes back and its marker settles it.
                log.warning("ack of message %s refused: %s", lease.message_id, error)
                return None
            except ClientError as error:
                # Asked again with lease_next: a next message leased by an answer that was
                # lost comes back in the answer to the retry.
                if self._stop.is_set() or self._clock() > lease.lease_expires_at:
                    log.warning(
                        "ack of message %s not sent (%s); it will be offered again "
                        "and acked without typing",
                        lease.message_id,
                        error,
                    )
                    return None
                self._report_api_error(error)
                self._stop.wait(backoff.next())

    def _nack(self, lease: Lease, reason: str) -> None:
        log.warning("message %s not delivered: %s", lease.message_id, reason)
        try:
            self.client.nack(lease.message_id, lease.lease_id, reason, retry=True)
        except ClientError as error:
            log.warning(
                "nack of message %s not sent (%s); its lease will run out", lease.message_id, error
            )

    def _post_event(self, kind: str, data: dict[str, object]) -> None:
        try:
            self.client.event(kind, data)
        except ClientError as error:
            log.warning("event %s not recorded: %s", kind, error)

    def _test_crash(self, point: str) -> None:
        # TEST ONLY (AGENTVISOR_SHIM_CRASH_AFTER_TYPE): die like `kill -9` at `point`.
        wanted = self.config.crash_after_type
        if wanted and (wanted == point or (wanted == "1" and point == "after-submit")):
            log.warning("AGENTVISOR_SHIM_CRASH_AFTER_TYPE=%s: killing myself", wanted)
            os.kill(os.getpid(), signal.SIGKILL)

    # Heartbeat.

    def _heartbeat_loop(self) -> None:
        # The agent is looked at every interval; the server hears of it when something changed,
        # and otherwise every HEARTBEAT_QUIET_FACTOR intervals: an idle sandbox costs the
        # server a request every 10 s, not every 5 s.
        last: tuple[str, dict[str, str | None]] | None = None
        last_sent = -math.inf
        while not self._stop.is_set():
            state, pane_hash = self._observe()
            info: dict[str, str | None] = {"pane_hash": pane_hash, "profile": self.profile.name}
            if state == "usage_limit":
                info["usage_limit"] = self._gate.notice
            turn = self.receipts.refresh() if self.receipts is not None else None
            if turn is not None and turn.seen:
                info["turn"] = "open" if turn.in_turn else "closed"
                if turn.attention:
                    info["attention"] = turn.attention
            quiet_s = self.config.heartbeat_interval_s * HEARTBEAT_QUIET_FACTOR
            if last == (state, info) and time.monotonic() - last_sent < quiet_s:
                self._stop.wait(self.config.heartbeat_interval_s)
                continue
            try:
                answer = self.client.heartbeat(state, info)
                last, last_sent = (state, info), time.monotonic()
                self._states.report("api", "ok", "host API reachable again")
                if isinstance(answer, dict) and answer.get("nudge"):
                    self._nudge.set()
            except ClientError as error:
                self._report_api_error(error)
            self._stop.wait(self.config.heartbeat_interval_s)

    def _observe(self) -> tuple[str, str | None]:
        """The agent's state for the heartbeat and a hash of its screen (the server tells a
        stuck agent by a hash that never changes)."""
        try:
            pane = self.session.current()
            lines = pane.capture_screen() if pane is not None else None
        except PaneError:
            lines = None
        if lines is None:
            return ("exited" if self._agent_started else "starting"), None
        pane_hash = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
        if self._usage_limited:
            return "usage_limit", pane_hash
        in_turn = self.receipts is not None and self.receipts.refresh().in_turn
        idle = screen.is_ready(self.profile, lines) and not in_turn
        return ("idle" if idle else "working"), pane_hash
