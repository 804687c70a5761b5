"""What a served API looks like to the tests, a real process or the app in process: operator
and agent clients, a project, an agent."""

from __future__ import annotations

from agentvisor.client import ApiClient


class ApiHost:
    """Clients of one served API; a subclass says how a client reaches it (`new_client`)."""

    def __init__(self) -> None:
        self._clients: list[ApiClient] = []

    def new_client(self, token: str | None) -> ApiClient:
        """A client with `token` (None: the operator's)."""
        raise NotImplementedError

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()

    @property
    def client(self) -> ApiClient:
        """An operator client (a new one after the clients are closed, as on a restart)."""
        if not self._clients:
            self._clients.append(self.new_client(None))
        return self._clients[0]

    def client_for(self, token: str) -> ApiClient:
        client = self.new_client(token)
        self._clients.append(client)
        return client

    def ensure_project(self, project: str = "demo", path: str = "/tmp/demo") -> dict:
        return self.client.post("/v1/projects", {"name": project, "path": path})

    def register_agent(self, project: str, role: str, profile: str = "demo") -> str:
        self.ensure_project(project, "")  # made if missing; an existing path is kept
        return self.client.post(
            "/v1/agents", {"project": project, "role": role, "profile": profile}
        )["token"]
