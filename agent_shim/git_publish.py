"""The shim's publisher: pushes the agent's branch `agent/<role>` from its clone to the host
over the channel soon after every new commit, so its work shows in the project unasked.

`PublishSchedule` decides when to push (pure); `GitBranch` and `Publisher` do the git I/O.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from agent_shim.shim import StateLog

log = logging.getLogger("agent_shim")

START_DELAY_S = 1.5  # after the shim's start, before the first look at the branch
POLL_S = 0.3
RECHECK_S = 15.0  # rev-parse this often even if no ref file seems to have changed
PUSH_TIMEOUT_S = 60.0
GIT_TIMEOUT_S = 10.0
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0
REJECTED_RETRY_S = 60.0  # the server said no: again only for a new tip, or after this long
ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
# What the publisher's git inherits from the shim; everything else (GIT_DIR, GIT_* config,
# proxies) is left out so that git sees only the repository in the working directory.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "GIT_SSL_CAINFO")


class PushOutcome(Enum):
    OK = "ok"
    REJECTED = "rejected"  # the server refused the update: retrying will not help soon
    FAILED = "failed"  # transport, timeout, server down: retry with backoff


@dataclass(frozen=True)
class PushResult:
    outcome: PushOutcome
    detail: str = ""  # one line for the log


class PublishSchedule:
    """When to push: a tip not yet published, no sooner than the retry time after a failure.

    A new tip is offered at once, even while a retry waits (commits are rare, and a new tip
    may be what the server wanted, e.g. after a refused force-push).
    """

    def __init__(
        self,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
        rejected_retry_s: float = REJECTED_RETRY_S,
    ) -> None:
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self.rejected_retry_s = rejected_retry_s
        self.tip: str | None = None  # the branch's current tip; None: no such branch
        self.published: str | None = None  # the tip last pushed successfully
        self.failures = 0
        self.retry_at = 0.0

    def observe(self, tip: str | None) -> bool:
        """Record the branch's tip; whether it changed."""
        if tip == self.tip:
            return False
        self.tip = tip
        self.failures, self.retry_at = 0, 0.0
        return True

    def due(self, now: float) -> bool:
        return self.tip is not None and self.tip != self.published and now >= self.retry_at

    def record(self, tip: str, outcome: PushOutcome, now: float) -> float:
        """Record a push of `tip`; returns the delay before it may be tried again (0: done)."""
        if outcome is PushOutcome.OK:
            self.published, self.failures, self.retry_at = tip, 0, 0.0
            return 0.0
        self.failures += 1
        if outcome is PushOutcome.REJECTED:
            delay = self.rejected_retry_s
        else:
            delay = min(self.retry_initial_s * 2 ** (self.failures - 1), self.retry_max_s)
        self.retry_at = now + delay
        return delay


def push_env(
    token: str | None, channel_url: str | None, inherited: Mapping[str, str]
) -> dict[str, str]:
    """The publisher's git environment: the token as an HTTP header sent only to the channel
    (configuration through the environment, never on a command line), no prompts, no hooks."""
    env = {k: inherited[k] for k in INHERITED_ENV if k in inherited}
    config = [("core.hooksPath", "/dev/null")]
    if token and channel_url:
        config.append((f"http.{channel_url}.extraHeader", f"Authorization: Bearer {token}"))
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for index, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def push_result(returncode: int, stdout: str, stderr: str) -> PushResult:
    """What `git push --porcelain` said, as one outcome and one line."""
    if returncode == 0:
        return PushResult(PushOutcome.OK)
    refused = [line for line in stdout.splitlines() if line.startswith("!")]
    remote = [
        line.removeprefix("remote:").strip()
        for line in stderr.splitlines()
        if line.startswith("remote:") and line.removeprefix("remote:").strip()
    ]
    if refused:
        reason = refused[0].split("\t")[-1]
        detail = "; ".join([reason, *remote])
        return PushResult(PushOutcome.REJECTED, _one_line(detail))
    errors = [line for line in stderr.splitlines() if line.strip()]
    detail = next((line for line in errors if line.startswith(("fatal:", "error:"))), "")
    return PushResult(PushOutcome.FAILED, _one_line(detail or f"git push exited {returncode}"))


def _one_line(text: str, limit: int = 300) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class GitBranch:
    """The agent's branch in its clone: a cheap change check, its tip, and the push.

    `remote` is a remote's name or a URL; the token (read from `token_file` before every
    push, so a re-registered agent's new one is used) is sent only to `channel_url`.
    """

    def __init__(
        self,
        workdir: str,
        role: str,
        remote: str = "origin",
        channel_url: str | None = None,
        token_file: str | None = None,
        env: Mapping[str, str] | None = None,
        git: str = "git",
    ) -> None:
        if not ROLE.match(role):
            raise ValueError(f"role {role!r} is not a valid branch name part")
        self.workdir, self.remote, self.git = workdir, remote, git
        self.channel_url, self.token_file = channel_url, token_file
        self.ref = f"refs/heads/agent/{role}"
        self._inherited = dict(os.environ if env is None else env)
        self.env = push_env(None, None, self._inherited)
        self.git_dir = self._git_dir() if os.path.exists(os.path.join(workdir, ".git")) else None

    def _run(
        self, *args: str, env: Mapping[str, str] | None = None, timeout_s: float = GIT_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """git with this argv, in the workdir; on timeout its whole process group is killed
        (git-remote-http would otherwise hold the pipes open)."""
        argv = [self.git, *args]
        with subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=dict(env or self.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        ) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)

    def _git_dir(self) -> str | None:
        try:
            done = self._run("rev-parse", "--absolute-git-dir")
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() or None if done.returncode == 0 else None

    def stamp(self) -> tuple[object, ...]:
        """Changes whenever the branch may have moved: the ref files' inode, size, mtime."""
        assert self.git_dir is not None
        parts: list[object] = []
        for name in (self.ref, "packed-refs", "HEAD"):
            try:
                st = os.stat(os.path.join(self.git_dir, name))
                parts.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                parts.append(None)
        return tuple(parts)

    def tip(self) -> str | None:
        done = self._run("rev-parse", "--verify", "--quiet", f"{self.ref}^{{commit}}")
        return done.stdout.strip() or None if done.returncode == 0 else None

    def push(self, timeout_s: float = PUSH_TIMEOUT_S) -> PushResult:
        refspec = f"+{self.ref}:{self.ref}"
        try:
            env = push_env(self._token(), self.channel_url, self._inherited)
            done = self._run(
                *("push", "--quiet", "--porcelain", "--no-verify", self.remote, refspec),
                env=env,
                timeout_s=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return PushResult(PushOutcome.FAILED, f"git push took longer than {timeout_s:.0f} s")
        except OSError as error:  # the token file or git itself
            return PushResult(PushOutcome.FAILED, f"cannot push: {error}")
        return push_result(done.returncode, done.stdout, done.stderr)

    def _token(self) -> str | None:
        if not self.token_file:
            return None
        with open(self.token_file, encoding="utf-8") as file:
            return file.read().strip()


class Publisher:
    """Watches the branch and pushes each new tip; `run()` until `stop` is set."""

    def __init__(
        self,
        branch: GitBranch,
        schedule: PublishSchedule | None = None,
        poll_s: float = POLL_S,
        clock: Callable[[], float] = time.monotonic,
        states: StateLog | None = None,
        on_published: Callable[[str], None] | None = None,
        start_delay_s: float = START_DELAY_S,
    ) -> None:
        self.branch = branch
        self.schedule = schedule or PublishSchedule()
        self.poll_s = poll_s
        self.start_delay_s = start_delay_s
        self._clock = clock
        self._states = states or StateLog()
        self._on_published = on_published
        self._stamp: tuple[object, ...] | None = None
        self._checked_at = float("-inf")

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="publisher", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        log.info(
            "publisher: pushing %s to %s on every new commit", self.branch.ref, self.branch.remote
        )
        # The first look (and the push of what was committed while the sandbox was down) waits
        # until the agent CLI and the shim have started: they need the CPU more.
        stop.wait(self.start_delay_s)
        while not stop.is_set():
            try:
                self.step()
            except Exception:
                # A bug, not a condition: say so, and keep publishing.
                log.exception("publisher: unexpected error; going on")
            stop.wait(self.poll_s)

    def step(self) -> None:
        """One look at the branch, and a push when one is due."""
        now = self._clock()
        stamp = self.branch.stamp()
        if stamp != self._stamp or now - self._checked_at >= RECHECK_S:
            self._stamp, self._checked_at = stamp, now
            self.schedule.observe(self.branch.tip())
        if not self.schedule.due(now):
            return
        tip = self.schedule.tip
        assert tip is not None
        result = self.branch.push()
        delay = self.schedule.record(tip, result.outcome, self._clock())
        ref = self.branch.ref.removeprefix("refs/heads/")
        if result.outcome is PushOutcome.OK:
            self._states.report("publish", "ok", "publisher: pushing %s works again", ref)
            log.info("publisher: published %s at %s", ref, tip[:12])
            if self._on_published is not None:
                self._on_published(tip)
            return
        self._states.report(
            "publish",
            f"{result.outcome.value} {result.detail}",
            "publisher: push of %s %s: %s; trying again in %.1f s, or at the next commit",
            ref,
            "refused" if result.outcome is PushOutcome.REJECTED else "failed",
            result.detail,
            delay,
            level=logging.WARNING,
        )
