"""Who is calling: the operator (one token in a 0600 file) or an agent (its own token, stored
hashed). Identity always comes from the token, never from the request body."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from agentvisor.errors import Forbidden, Unauthorized
from agentvisor.store.database import OPERATOR, Row, Store, new_token


@dataclass(frozen=True)
class Caller:
    kind: str  # "operator" | "agent"
    agent: Row | None = None

    @property
    def is_operator(self) -> bool:
        return self.kind == OPERATOR

    @property
    def name(self) -> str:
        """The sender name recorded on messages and check-ins."""
        return OPERATOR if self.agent is None else str(self.agent["role"])

    @property
    def project_id(self) -> int | None:
        return None if self.agent is None else int(self.agent["project_id"])

    def require_agent(self) -> Row:
        if self.agent is None:
            raise Forbidden("this endpoint is for agents: call it with an agent's token")
        return self.agent

    def require_operator(self) -> None:
        if not self.is_operator:
            raise Forbidden("this endpoint needs the operator token")


def ensure_operator_token(path: Path) -> str:
    """Read the operator token, creating it (mode 0600) on first start."""
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token("avo")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token


class Authenticator:
    def __init__(self, store: Store, operator_token: str) -> None:
        self.store = store
        self._operator_token = operator_token

    def caller(self, authorization: str | None) -> Caller:
        if not authorization:
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("malformed Authorization header: expected 'Bearer <token>'")
        if hmac.compare_digest(token.encode(), self._operator_token.encode()):
            return Caller(OPERATOR)
        agent = self.store.agent_by_token(token)
        if agent is None:
            raise Unauthorized("unknown or revoked token")
        return Caller("agent", agent)
