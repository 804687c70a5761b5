"""The operator's client of the host API, over the Unix socket (httpx)."""

from __future__ import annotations

from typing import Any

import httpx

from agentvisor.config import Settings
from agentvisor.errors import (
    AgentvisorError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    ServerUnavailable,
    StorageFull,
    TooLarge,
    TooManyRequests,
    Unauthorized,
)

_ERRORS: dict[int, type[AgentvisorError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    422: InvalidInput,
    429: TooManyRequests,
    507: StorageFull,
}


class ApiClient:
    def __init__(
        self,
        settings: Settings,
        token: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`transport`: the Unix socket in `settings` unless given (the tests serve the app
        in process)."""
        self.settings = settings
        if token is None:
            try:
                token = settings.operator_token_path.read_text(encoding="utf-8").strip()
            except OSError:
                token = ""
        if transport is None:
            transport = httpx.HTTPTransport(uds=str(settings.socket_path))
        self._http = httpx.Client(
            transport=transport,
            base_url="http://agentvisor",
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=timeout_s,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            request = self._http.build_request(method, path, **kwargs)
        except (ValueError, TypeError) as exc:  # NaN, a lone surrogate: not JSON, not UTF-8
            raise InvalidInput(f"cannot send that request: {exc}") from None
        try:
            response = self._http.send(request)
        except (httpx.TransportError, FileNotFoundError) as exc:
            raise ServerUnavailable(
                f"the agentvisor server does not answer on {self.settings.socket_path} ({exc}); "
                "start it with 'agentvisor serve --detach'"
            ) from None
        if response.status_code == 204:
            return None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            error = _ERRORS.get(response.status_code, AgentvisorError)
            raise error(str(detail))
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        return self.request(
            "POST",
            path,
            json={k: v for k, v in (body or {}).items() if v is not None},
            params={k: v for k, v in params.items() if v is not None},
        )

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
