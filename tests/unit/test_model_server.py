"""The scripted Messages API, driven with the standard library's HTTP client as Claude Code
would drive it: streamed and plain answers, tool calls continued after their result, the
usage-limit 429, side calls that use no step, and the record of every request."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentvisor.testing.model_server import (
    ModelServer,
    ScriptError,
    gateway_token,
    last_user_text,
    load_script,
)
from tests.helpers import wait_until

TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]


def conversation(*turns: Any) -> dict[str, Any]:
    """A request body like Claude Code's turns: tools given, the messages so far."""
    return {"model": "claude-test", "max_tokens": 100, "tools": TOOLS, "messages": list(turns)}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def tool_result(tool_use_id: str, output: str) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": tool_use_id, "content": output}],
    }


def post(
    server: ModelServer, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = server.httpd.server_address[:2]
    connection = http.client.HTTPConnection(str(host), port, timeout=10)
    try:
        connection.request(
            "POST",
            "/v1/messages?beta=true",
            body=json.dumps(body),
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    parsed = []
    for block in raw.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        parsed.append((lines["event"], json.loads(lines["data"])))
    return parsed


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    servers: list[ModelServer] = []

    def start(steps: Any) -> ModelServer:
        server = ModelServer(steps, record_path=tmp_path / "record.jsonl").start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_text_step_answers_a_turn_as_a_plain_message(serve):
    server = serve([{"text": "Hello there"}])

    status, _headers, raw = post(server, conversation(user("hi")))

    answer = json.loads(raw)
    assert status == 200
    assert answer["type"] == "message" and answer["role"] == "assistant"
    assert answer["content"] == [{"type": "text", "text": "Hello there"}]
    assert answer["stop_reason"] == "end_turn"


def test_streamed_text_is_the_messages_api_event_sequence(serve):
    text = "A reply long enough to come in more than one delta, as real replies do."
    server = serve([{"text": text}])

    status, headers, raw = post(server, {**conversation(user("hi")), "stream": True})

    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    stream = events(raw)
    names = [name for name, _ in stream]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 1
    deltas = [data["delta"]["text"] for name, data in stream if name == "content_block_delta"]
    assert len(deltas) > 1 and "".join(deltas) == text
    assert stream[-2][1]["delta"]["stop_reason"] == "end_turn"


def test_tool_step_calls_bash_and_the_next_step_answers_its_result(serve):
    server = serve([{"tool": "Bash", "command": "agent checkin 1 'note'"}, {"text": "Scheduled."}])

    _, _, raw = post(server, {**conversation(user("plan")), "stream": True})
    stream = events(raw)
    start = next(d for n, d in stream if n == "content_block_start")["content_block"]
    partial = next(d for n, d in stream if n == "content_block_delta")["delta"]
    assert start["type"] == "tool_use" and start["name"] == "Bash"
    assert json.loads(partial["partial_json"])["command"] == "agent checkin 1 'note'"
    assert stream[-2][1]["delta"]["stop_reason"] == "tool_use"

    assistant = {"role": "assistant", "content": [{**start, "input": {"command": "x"}}]}
    _, _, raw = post(
        server, conversation(user("plan"), assistant, tool_result(start["id"], "check-in 7"))
    )
    assert json.loads(raw)["content"][0]["text"] == "Scheduled."
    assert [r["step"] for r in server.conversation()] == [0, 1]


def test_a_step_with_when_waits_for_a_matching_user_message(serve):
    server = serve([{"text": "for the briefing", "when": "BRIEFING"}, {"text": "plain"}])

    _, _, first = post(server, conversation(user("something else")))
    _, _, second = post(server, conversation(user("here is the BRIEFING")))
    _, _, third = post(server, conversation(user("more")))

    assert json.loads(first)["content"][0]["text"] == "plain"
    assert json.loads(second)["content"][0]["text"] == "for the briefing"
    assert json.loads(third)["content"][0]["text"] == "OK."  # the script ran out


def test_usage_limit_step_is_the_429_claude_code_shows_as_its_limit(serve):
    server = serve([{"usage_limit": True, "resets_at": 1767225600}])

    status, headers, raw = post(server, conversation(user("go on")))

    assert status == 429
    assert json.loads(raw)["error"]["type"] == "rate_limit_error"
    assert headers["anthropic-ratelimit-unified-status"] == "rejected"
    assert headers["anthropic-ratelimit-unified-reset"] == "1767225600"
    assert headers["anthropic-ratelimit-unified-representative-claim"] == "five_hour"


def test_a_delayed_step_answers_that_much_later(serve):
    server = serve([{"text": "slow", "delay_s": 0.5}])

    started = time.monotonic()
    _, _, raw = post(server, {**conversation(user("hi")), "stream": True})

    assert time.monotonic() - started >= 0.5
    assert "slow" in raw.decode()


def test_side_calls_get_a_short_text_and_use_no_step(serve):
    server = serve([{"text": "the turn's answer"}])
    title = {"model": "claude-test", "max_tokens": 50, "messages": [user("<session>x</session>")]}

    _, _, side = post(server, title)
    _, _, turn = post(server, conversation(user("hi")))

    assert json.loads(side)["content"][0]["type"] == "text"
    assert json.loads(turn)["content"][0]["text"] == "the turn's answer"
    assert server.script.remaining == 0


def test_hello_count_tokens_and_telemetry_are_answered(serve):
    server = serve([])
    host, port = server.httpd.server_address[:2]
    connection = http.client.HTTPConnection(str(host), port, timeout=5)
    connection.request("HEAD", "/api/hello")
    assert connection.getresponse().status == 200
    connection.close()

    status, _, _ = post(server, conversation(user("count me")))
    assert status == 200
    connection = http.client.HTTPConnection(str(host), port, timeout=5)
    connection.request("POST", "/v1/messages/count_tokens", body=json.dumps(conversation()))
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["input_tokens"] > 0
    connection.close()


def test_every_request_is_recorded_without_secrets(serve, tmp_path: Path):
    server = serve([{"text": "hi"}])

    post(server, conversation(user("secret-free")), {"x-api-key": "sk-ant-1", "X-Custom": "1"})

    lines = [json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines == server.requests
    entry = lines[0]
    assert entry["path"] == "/v1/messages?beta=true" and entry["conversation"] is True
    assert entry["headers"]["x-custom"] == "1" and "x-api-key" not in entry["headers"]
    assert last_user_text(entry["body"]) == "secret-free"
    assert entry["reply"] == {"text": "hi"}


def test_last_user_text_reads_text_blocks_and_tool_results():
    body = conversation(
        user("first"), {"role": "assistant", "content": "ok"}, tool_result("t", "out")
    )
    assert last_user_text(body) == "out"
    assert last_user_text({"messages": [{"role": "user", "content": "plain"}]}) == "plain"


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ({"text": "x"}, "JSON list"),
        ({"agents": {"developer": {"text": "x"}}}, "steps of 'developer' must be a JSON list"),
        ({"agents": {"tester": [{"tool": "Bash"}]}}, "needs 'command'"),
        (["text"], "step 0 must be a JSON object"),
        ([{"nothing": 1}], "step 0 needs one of"),
        ([{"tool": "Bash"}], "needs 'command'"),
        ([{"text": "x", "delay_s": "soon"}], "'delay_s' must be a number"),
    ],
)
def test_bad_scripts_are_refused_with_the_step_and_the_reason(steps: Any, message: str):
    with pytest.raises(ScriptError, match=message):
        load_script(steps)


def test_the_command_line_serves_a_script_file_and_records(tmp_path: Path):
    script = tmp_path / "steps.json"
    script.write_text(json.dumps([{"text": "from the file"}]))
    record = tmp_path / "log.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentvisor.testing.model_server", "--port", "0",
         "--script", str(script), "--record", str(record)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        connection.request("POST", "/v1/messages", body=json.dumps(conversation(user("hi"))))
        assert json.loads(connection.getresponse().read())["content"][0]["text"] == "from the file"
        connection.close()
        wait_until(lambda: record.exists() and record.read_text(), message="the record")
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_gateway_token_is_a_jwt_for_the_claude_gateway_audience():
    import base64

    _header, claims, _signature = gateway_token().split(".")
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert decoded["aud"] == "claude-gateway"


def _reply(raw: bytes) -> dict[str, Any]:
    """The first content block of a non-streamed answer."""
    return json.loads(raw)["content"][0]


def _turn(server: ModelServer, agent: str, *turns: Any) -> dict[str, Any]:
    _, _, raw = post(server, conversation(*turns), {"x-agentvisor-agent": f"demo/{agent}"})
    return _reply(raw)


def test_a_team_script_gives_each_agent_its_own_list_in_order(serve):
    """The documented per-agent format, with a team of three: the developer has its own list,
    the others share `*` (each its own copy), `{role}` is filled in, a step after a tool step
    answers only that tool's result, and an agent without steps left gets "OK."."""
    server = serve(
        {
            "agents": {
                "developer": [{"text": "dev 1"}, {"text": "dev 2", "when": "REVIEW"}],
                "*": [
                    {"tool": "Bash", "command": "agent checkin 1 '{role} later'"},
                    {"text": "{role} scheduled"},
                ],
            }
        }
    )
    briefing = user("You are the **orchestrator** of project **demo**")
    call = _turn(server, "orchestrator", briefing)
    assert call["type"] == "tool_use" and call["input"]["command"] == (
        "agent checkin 1 'orchestrator later'"
    )
    # The tester's first turn takes its own copy of `*`, not the orchestrator's next step.
    assert (
        _turn(server, "tester", user("hi"))["input"]["command"] == "agent checkin 1 'tester later'"
    )
    # A message (not the tool's result) does not take the step reserved for the result.
    assert _turn(server, "orchestrator", user("a message"))["text"] == "OK."
    assistant = {"role": "assistant", "content": [call]}
    answered = _turn(server, "orchestrator", briefing, assistant, tool_result(call["id"], "ok"))
    assert answered["text"] == "orchestrator scheduled"
    # The developer: its own list, `when` waiting for a matching message.
    assert _turn(server, "developer", user("briefing"))["text"] == "dev 1"
    assert _turn(server, "developer", user("unrelated"))["text"] == "OK."
    assert _turn(server, "developer", user("please REVIEW"))["text"] == "dev 2"
    assert server.script.remaining == 1  # the tester's answer to its tool result
    roles = [(r["role"], r["step"]) for r in server.conversation()]
    assert roles[:2] == [("orchestrator", 0), ("tester", 0)]


def test_without_the_brokers_header_the_role_comes_from_the_briefing(serve):
    server = serve({"agents": {"tester": [{"text": "for the tester"}], "*": []}})
    body = conversation(user("You are a **tester** on project **demo** ..."))
    _, _, raw = post(server, {**body, "metadata": {"user_id": "user_abc"}})
    assert _reply(raw)["text"] == "for the tester"
    _, _, raw = post(server, conversation(user("You are a **developer** on project **demo**")))
    assert _reply(raw)["text"] == "OK."  # `*` is empty
    assert [r["agent"] for r in server.conversation()] == ["user_abc", "developer"]


def test_the_dry_run_script_briefs_checks_in_and_reports_for_every_role(serve):
    server = serve("dry-run")
    for role in ("orchestrator", "developer", "tester"):
        briefing = user(f"You are a **{role}** on project **demo**")
        call = _turn(server, role, briefing)
        assert call["input"]["command"].startswith("agent checkin 1 'Dry run: ")
        note = call["input"]["command"].split("'")[1]
        done = {"role": "assistant", "content": [call]}
        assert (
            role
            in _turn(server, role, briefing, done, tool_result(call["id"], "check-in 1"))["text"]
        )
        report = _turn(server, role, user(f"[checkin 1] {note}"))
        assert report["input"]["command"].startswith("agent done '")
        assert ("PROJECT COMPLETE" in report["input"]["command"]) == (role == "orchestrator")
