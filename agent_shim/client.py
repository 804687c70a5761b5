"""A small client for the host API over its Unix socket (standard library only).

One connection per request, so the daemon's threads can share one `ApiClient`. The bearer
token is read from its file on every request: a re-registered agent's new token is picked up.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

DEFAULT_SOCKET = "/run/agentvisor/sock/api.sock"
DEFAULT_TOKEN_FILE = "/run/agentvisor/token"
DEFAULT_TIMEOUT_S = 10.0
LEASE_TIMEOUT_MARGIN_S = 10.0  # the server answers a long poll after at most `wait_s`


class ClientError(Exception):
    """Base of the errors the client raises; `str()` is one line a user can act on."""


class ServerUnreachable(ClientError):
    """Nothing answers on the socket (server down or restarting), or it answered too late."""

    def __init__(self, socket_path: str, reason: str) -> None:
        super().__init__(
            f"agentvisor server not reachable at {socket_path} ({reason}); "
            "it may be restarting, try again"
        )
        self.socket_path = socket_path
        self.reason = reason


class TokenUnreadable(ClientError):
    """The agent's token file is missing or unreadable."""


class ApiError(ClientError):
    """The server answered with an error status; `detail` is its one-sentence explanation."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{detail} (HTTP {status})")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Lease:
    """A message leased from the inbox: deliver it, then ack or nack with `lease_id`."""

    message: dict[str, Any]
    lease_id: str
    lease_expires_at: float

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> Lease:
        """The lease in the server's answer (`LeaseAnswer`: a long poll's, or an ack's next)."""
        return cls(answer["message"], str(answer["lease_id"]), float(answer["lease_expires_at"]))

    @property
    def message_id(self) -> str:
        return str(self.message["id"])

    @property
    def marker(self) -> str:
        return str(self.message["marker"])

    @property
    def body(self) -> str:
        return str(self.message["body"])

    @property
    def sender(self) -> str:
        """Who sent it, as the server recorded it from the sender's token."""
        return str(self.message.get("sender") or "")

    @property
    def first_lease(self) -> bool:
        """The message was never handed out before this lease, so it was never typed. False
        when the server does not say (an older server): the pane is searched then."""
        return self.message.get("leases") == 1


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket."""

    def __init__(self, socket_path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ApiClient:
    """The calls an agent makes; each returns the decoded JSON answer."""

    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        token_file: str = DEFAULT_TOKEN_FILE,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.socket_path = socket_path
        self.token_file = token_file
        self.timeout_s = timeout_s

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiClient:
        env = os.environ if env is None else env
        return cls(
            env.get("AGENTVISOR_SOCKET", DEFAULT_SOCKET),
            env.get("AGENTVISOR_TOKEN_FILE", DEFAULT_TOKEN_FILE),
        )

    def _token(self) -> str:
        try:
            with open(self.token_file, encoding="utf-8") as file:
                token = file.read().strip()
        except OSError as error:
            raise TokenUnreadable(
                f"cannot read the agent token at {self.token_file} ({error.strerror}); "
                "is AGENTVISOR_TOKEN_FILE right?"
            ) from None
        if not token:
            raise TokenUnreadable(f"the agent token file {self.token_file} is empty")
        return token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """Send one request; the decoded JSON answer, or None for 204 No Content."""
        if query:
            path += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        connection = UnixHTTPConnection(self.socket_path, timeout_s or self.timeout_s)
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise ServerUnreachable(self.socket_path, error.strerror or "refused") from None
        except TimeoutError:
            raise ServerUnreachable(self.socket_path, "no answer in time") from None
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise ServerUnreachable(self.socket_path, reason) from None
        finally:
            connection.close()
        if status >= 400:
            raise ApiError(status, _detail(raw, status))
        if status == 204 or not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(status, "the server sent an answer that is not JSON") from None

    # The agent's endpoints (docs/contracts.md).

    def whoami(self) -> dict[str, Any]:
        return self.request("GET", "/v1/whoami")

    def team(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/agents")

    def inbox(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/inbox")

    def lease(self, wait_s: float = 25.0) -> Lease | None:
        """Long-poll the inbox; None when nothing came within `wait_s`."""
        answer = self.request(
            "POST",
            "/v1/inbox/lease",
            query={"wait_s": wait_s},
            timeout_s=wait_s + LEASE_TIMEOUT_MARGIN_S,
        )
        if answer is None:
            return None
        return Lease.from_answer(answer)

    def release(self) -> int:
        """Hand back leases a previous shim of this agent held when it died."""
        answer = self.request("POST", "/v1/inbox/release", {})
        return int((answer or {}).get("released", 0))

    def ack(self, message_id: str, lease_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/inbox/{quote(message_id)}/ack", {"lease_id": lease_id})

    def ack_and_lease(self, message_id: str, lease_id: str) -> Lease | None:
        """Ack, and lease the agent's next message in the same round trip (None: none queued,
        or a server that does not offer it; the next long poll brings it then)."""
        answer = self.request(
            "POST",
            f"/v1/inbox/{quote(message_id)}/ack",
            {"lease_id": lease_id},
            query={"lease_next": "true"},
        )
        following = answer.get("next") if isinstance(answer, dict) else None
        if not following:
            return None
        return Lease.from_answer(following)

    def nack(
        self, message_id: str, lease_id: str, reason: str, retry: bool = True
    ) -> dict[str, Any]:
        return self.request(
            "POST",
            f"/v1/inbox/{quote(message_id)}/nack",
            {"lease_id": lease_id, "reason": reason, "retry": retry},
        )

    def heartbeat(
        self, state: str | None = None, info: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """`info` carries what the server keeps as is, e.g. `pane_hash`."""
        body: dict[str, Any] = {}
        if state is not None:
            body["state"] = state
        if info:
            body["info"] = info
        return self.request("POST", "/v1/heartbeat", body)

    def event(self, kind: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind}
        if data is not None:
            body["data"] = data
        return self.request("POST", "/v1/events", body)

    def send(
        self, to: str, body: str, kind: str | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"to": to, "body": body}
        if kind:
            payload["kind"] = kind
        if idempotency_key:
            payload["idempotency_key"] = idempotency_key
        return self.request("POST", "/v1/messages", payload)

    def checkin(
        self,
        minutes: float,
        note: str,
        to: str | None = None,
        every_minutes: float | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"minutes": minutes, "note": note}
        for key, value in (
            ("to", to),
            ("every_minutes", every_minutes),
            ("idempotency_key", idempotency_key),
        ):
            if value is not None:
                payload[key] = value
        return self.request("POST", "/v1/checkins", payload)

    def done(self, summary: str) -> dict[str, Any]:
        return self.request("POST", "/v1/done", {"summary": summary})


def _detail(raw: bytes, status: int) -> str:
    try:
        detail = json.loads(raw).get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # FastAPI's validation errors: a list of {"loc", "msg"}
        detail = "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    if not detail:
        text = raw.decode("utf-8", "replace").strip()
        detail = text[:200] or http.client.responses.get(status, "error")
    return str(detail)
