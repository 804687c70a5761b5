"""The tmux session `agent` whose first window runs the agent CLI: created when missing, its
pane respawned (with the profile's resume command) when the CLI exits, the screen that the
respawn clears kept in the saved screens (agent_shim.history).
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import libtmux

from agent_shim.history import (
    HISTORY_LIMIT,
    SavedScreens,
    new_restart_id,
    respawn_argv,
    screen_to_save,
)
from agent_shim.pane import AgentPane, PaneError
from agent_shim.profiles import Profile

log = logging.getLogger("agent_shim")

PANE_SIZE = (200, 50)
HEALTHY_RUN_S = 60.0  # a CLI that ran this long before exiting is restarted at once
QUICK_EXIT_S = 10.0  # a resume command that dies this fast is replaced by the fresh command
MAX_RESTART_DELAY_S = 60.0


@dataclass
class _Restarts:
    started_at: float | None = None  # when the running CLI was started, if by this shim
    dead_since: float | None = None  # when its exit was first seen
    ran_s: float | None = None  # how long the CLI that exited had run
    resumed: bool = False  # it was started with the resume command
    delay_s: float = 0.0


class AgentSession:
    """Keeps the agent CLI running in `=<name>:^` (the session's first window)."""

    def __init__(
        self,
        server: libtmux.Server,
        profile: Profile,
        workdir: str,
        env: Mapping[str, str],
        name: str = "agent",
        clock: Callable[[], float] = time.monotonic,
        resume_at_start: bool = False,
        screens: SavedScreens | None = None,
    ) -> None:
        self.server = server
        self.profile = profile
        self.workdir = workdir
        self.env = dict(env)
        self.name = name
        self._clock = clock
        # Start with the resume command (a conversation to continue); if that dies quickly,
        # the next start is the fresh command, as after any failed resume.
        self.resume_at_start = resume_at_start
        self._restarts = _Restarts()
        self._pane: AgentPane | None = None
        # Where the screen a respawn clears is kept (agent_shim.history); None: not kept.
        self.screens = screens

    @property
    def target(self) -> str:
        return f"={self.name}:^"

    def wait_for_server(self, timeout_s: float) -> bool:
        """Give a tmux server started by someone else (supervisord) `timeout_s` to come up,
        so the shim does not start a second one on the same socket."""
        deadline = self._clock() + timeout_s
        while not self.server.is_alive():
            if self._clock() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def ensure(self) -> AgentPane | None:
        """The agent's pane, creating the session or respawning the CLI when needed. None
        while a CLI that keeps exiting waits out its restart delay."""
        found = self._find()
        if found is None:
            self._create()
            found = self._find()
            if found is None:
                raise PaneError(f"tmux session {self.name!r} vanished right after its creation")
        pane_id, dead, status = found
        if dead and not self._respawn(pane_id, status):
            return None
        if self._pane is None or self._pane.pane_id != pane_id:
            self._pane = AgentPane(self.server, pane_id, self.screens)
        return self._pane

    def current(self) -> AgentPane | None:
        """The agent's pane if its CLI runs, without creating or restarting anything."""
        found = self._find()
        if found is None or found[1]:
            return None
        return AgentPane(self.server, found[0], self.screens)

    def _find(self) -> tuple[str, bool, str] | None:
        result = self.server.cmd(
            "list-panes", "-t", self.target, "-F", "#{pane_id} #{pane_dead} #{pane_dead_status}"
        )
        if result.returncode != 0 or not result.stdout:
            return None
        pane_id, dead, *status = result.stdout[0].split(" ")
        return pane_id, dead == "1", "".join(status)

    def _spawn_options(self) -> list[str]:
        options = ["-c", self.workdir]
        for key, value in sorted(self.env.items()):
            options += ["-e", f"{key}={value}"]
        return options

    def _create(self) -> None:
        resume = self.profile.resume_command if self.resume_at_start else None
        command = resume or self.profile.command
        if not os.path.isdir(self.workdir):
            log.warning(
                "working directory %s does not exist; tmux starts the agent elsewhere", self.workdir
            )
        width, height = PANE_SIZE
        # Options first, in the same tmux invocation that may start the server: a CLI that
        # exits at once must still leave a dead pane (remain-on-exit) rather than no session.
        options = ["set-option", "-g", "history-limit", str(HISTORY_LIMIT), ";"]
        options += ["set-option", "-wg", "remain-on-exit", "on", ";"]
        session = ["new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height)]
        result = self.server.cmd(*options, *session, *self._spawn_options(), "--", *command)
        if result.returncode != 0:
            raise PaneError(
                f"cannot create tmux session {self.name!r}: "
                + (" ".join(result.stderr) or f"exit {result.returncode}")
            )
        self._restarts = _Restarts(started_at=self._clock(), resumed=resume is not None)
        log.info("started the agent in tmux session %r: %s", self.name, shlex.join(command))

    def _respawn(self, pane_id: str, status: str) -> bool:
        restarts, now = self._restarts, self._clock()
        if restarts.dead_since is None:  # first sight of this exit
            restarts.dead_since = now
            ran_s = None if restarts.started_at is None else now - restarts.started_at
            restarts.ran_s = ran_s
            quick = ran_s is not None and ran_s < HEALTHY_RUN_S
            # A CLI that keeps dying is restarted after 1, 2, 4 ... 60 s, not in a hot loop.
            restarts.delay_s = (
                min(max(restarts.delay_s * 2, 1.0), MAX_RESTART_DELAY_S) if quick else 0.0
            )
            ran = "an unknown time" if ran_s is None else f"{ran_s:.0f} s"
            log.info(
                "the agent CLI exited (status %s) after %s; restarting it in %.0f s",
                status or "?",
                ran,
                restarts.delay_s,
            )
        if now < restarts.dead_since + restarts.delay_s:
            return False
        resume = self.profile.resume_command
        resume_failed = (
            restarts.resumed and restarts.ran_s is not None and restarts.ran_s < QUICK_EXIT_S
        )
        command = resume if resume and not resume_failed else self.profile.command
        self._respawn_keeping_screen(pane_id, command)
        log.info("restarted the agent CLI: %s", shlex.join(command))
        restarts.started_at, restarts.dead_since = now, None
        restarts.resumed = command == resume
        return True

    def _respawn_keeping_screen(self, pane_id: str, command: tuple[str, ...]) -> None:
        """Respawn the pane with `command`; the screen the respawn clears is saved. Captured
        in the same tmux command as the respawn, so that no line can scroll from the screen
        into the history in between (tmux writes "Pane is dead" when it learns the status)
        and be kept twice; saved after it, so a shim killed in between loses only that
        screen, never doubles it."""
        restart_id = new_restart_id()
        keep = self.screens is not None
        argv = respawn_argv(restart_id, command) if keep else list(command)
        capture = ["capture-pane", "-p", "-J", "-t", pane_id, ";"] if keep else []
        respawn = ["respawn-pane", "-k", "-t", pane_id, *self._spawn_options(), "--", *argv]
        result = self.server.cmd(*capture, *respawn)
        if result.returncode != 0:
            raise PaneError(
                f"cannot restart the agent CLI in pane {pane_id}: "
                + (" ".join(result.stderr) or f"exit {result.returncode}")
            )
        if self.screens is None:
            return
        try:
            self.screens.save(screen_to_save(restart_id, result.stdout))
        except OSError as error:
            log.warning("the agent's last screen before its restart was not kept: %s", error)
