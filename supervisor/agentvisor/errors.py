"""Domain errors: each carries one sentence a user can act on.

The CLI prints them as one line and exits non-zero; the API turns them into a 4xx body.
"""

from __future__ import annotations


class AgentvisorError(Exception):
    """Base of every error a user can act on. `status` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(AgentvisorError):
    status = 400


class NotFound(AgentvisorError):
    status = 404


class Conflict(AgentvisorError):
    status = 409


class Forbidden(AgentvisorError):
    status = 403


class Unauthorized(AgentvisorError):
    status = 401


class TooLarge(AgentvisorError):
    status = 413


class TooManyRequests(AgentvisorError):
    """Over a quota (docs/limits.md): the API answers 429 with `Retry-After`."""

    status = 429

    def __init__(self, message: str, retry_after_s: float = 60.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SpecError(AgentvisorError):
    """The spec file cannot be used (missing, empty, not UTF-8, no recognisable goal)."""


class GitError(AgentvisorError):
    """A git operation on the project could not be done as asked."""


class SandboxError(AgentvisorError):
    """A sandbox could not be built, started, stopped or found."""


class SandboxesNotStopped(SandboxError):
    """Some of the sandboxes asked to stop did not (the others did: `stopped`)."""

    def __init__(self, message: str, stopped: list[str]) -> None:
        super().__init__(message)
        self.stopped = stopped


class EngineUnavailable(SandboxError):
    """The Docker engine cannot be reached."""


class ServerUnavailable(AgentvisorError):
    """The agentvisor server is not running or does not answer on its socket."""


class StorageFull(AgentvisorError):
    """The disk holding the state directory is full: nothing new can be accepted."""

    status = 507
