"""Hub-spoke routing against a real server and the real CLI: a critical message between two
agents is copied to the orchestrator (saying whom it went to), strict hub-spoke refuses the
direct ones, and `messages --audit` shows who said what to whom."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from agentvisor import cli
from agentvisor.errors import Forbidden
from tests.conftest import ServerProcess
from tests.helpers import team_clients


def test_task_complete_from_developer_to_tester_also_reaches_the_orchestrator(
    server: ServerProcess,
):
    developer = team_clients(server)["developer"]
    sent = developer.post("/v1/messages", {"to": "tester", "body": "Task complete: the parser"})
    developer.post("/v1/messages", {"to": "tester", "body": "what is for lunch?"})
    to_hub = server.client.get("/v1/messages", project="demo", recipient="orchestrator")
    assert [(m["kind"], m["sender"]) for m in to_hub] == [("copy", "developer")]
    assert to_hub[0]["body"] == (
        "(A copy for you: developer wrote this to tester.)\nTask complete: the parser"
    )
    # The tester got the original, once.
    to_tester = server.client.get("/v1/messages", project="demo", recipient="tester")
    assert sorted(m["body"] for m in to_tester) == [
        "Task complete: the parser",
        "what is for lunch?",
    ]

    state = ["--state", str(server.state_dir)]
    audit = CliRunner().invoke(cli.app, [*state, "messages", "--audit", "--json"])
    assert audit.exit_code == 0, audit.output
    rows = [e["data"] for e in json.loads(audit.output)]
    assert {"id": sent["id"], "from": "developer", "to": "tester", "kind": "message",
            "copied_to": ["orchestrator"]} in rows  # fmt: skip
    table = CliRunner().invoke(cli.app, [*state, "messages", "--audit"])
    assert "copied to" in table.output and "orchestrator" in table.output


def test_strict_hub_spoke_refuses_direct_messages_between_agents(server: ServerProcess):
    team = team_clients(server)
    state = ["--state", str(server.state_dir)]
    on = CliRunner().invoke(cli.app, [*state, "routing", "demo", "--hub-only", "--json"])
    assert on.exit_code == 0 and json.loads(on.output)["hub_only"] is True
    developer = team["developer"]
    try:
        developer.post("/v1/messages", {"to": "tester", "body": "psst"})
        raise AssertionError("a direct message went through")
    except Forbidden as exc:
        assert "strict hub-spoke" in exc.message
    developer.post("/v1/messages", {"to": "orchestrator", "body": "via the hub"})
    team["orchestrator"].post("/v1/messages", {"to": "tester", "body": "ok"})
    # Agents cannot change the routing; the operator can turn it off.
    try:
        developer.post("/v1/projects/demo/routing", {"hub_only": False})
        raise AssertionError("an agent changed the routing")
    except Forbidden:
        pass
    off = CliRunner().invoke(cli.app, [*state, "routing", "demo", "--no-hub-only"])
    assert off.exit_code == 0 and "strict hub-spoke: no" in off.output
    developer.post("/v1/messages", {"to": "tester", "body": "direct again"})
