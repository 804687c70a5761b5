"""A scripted stand-in for the Anthropic Messages API, enough for Claude Code: tests and dry runs
point `ANTHROPIC_BASE_URL` at it instead of Anthropic. Standard library only, so that this one
file also runs inside a sandbox with the image's python3 (see docs/guides/claude-code.md).

    python -m agentvisor.testing.model_server --port 8080 --script steps.json --record log.jsonl

The script is a JSON list of steps, each one reply of the model to one request of the
conversation. A request takes the first step left that has no `when`, or whose `"when": TEXT`
is in the request's last user message (a step with `when` waits for such a request). A step is
one of:

    {"text": "Hello"}                                   a text reply (end of turn)
    {"tool": "Bash", "command": "agent checkin 1 'x'"}  a tool call; the request after it
                                                        carries the tool's result and the next
                                                        step answers it
    {"tool": "Read", "input": {"file_path": "/a"}}      any other tool, input given as is
    {"usage_limit": true, "resets_at": 1767225600}      the 429 Claude Code shows as its
                                                        usage-limit notice ("resets_in_s": N
                                                        counts from when it is sent)
    {"error": {"status": 529, "type": "overloaded_error", "message": "Overloaded"}}

A POST whose credential's sha256 is in `ModelServer.revoked` gets a 401 instead.

and may add `"delay_s": N` (answer that much later: a slow model). When the script runs out the
model answers "OK.". Requests that are not turns of the conversation (title generation, quota
checks and other side calls, which have no tools) get a short text without using a step.

One list serves every agent that calls, in the order they call. For a team, give each agent
its own list instead, an object `{"agents": {"developer": [...], "*": [...]}}`: every agent
works through its own copy of the list of its role, or of `"*"` when its role has none (no
list: "OK." to everything), and `{role}` in a step's text or command becomes its role. The
agent is the `x-agentvisor-agent: PROJECT/ROLE` header the broker adds for a dry run (else its
role is read from its briefing, "You are a **developer** ..."). In these lists a step right
after a tool step answers that tool's result and nothing else. `--script dry-run` is the
built-in team script (`DRY_RUN_SCRIPT`).

Every request is recorded (path, headers without secrets, JSON body, the step that answered)
in memory and, with `--record`, as a JSON line in a file.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import itertools
import json
import re
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "cookie", "proxy-authorization", "anthropic-api-key"}
)
DEFAULT_TEXT = "OK."
SIDE_TEXT = "Agent session"  # what a side call (a title, a topic) gets
DEFAULT_MODEL = "claude-sonnet-4-5"
USAGE_LIMIT_CLAIMS = {"five_hour": "5h", "seven_day": "7d"}
STEP_KINDS = ("text", "tool", "usage_limit", "error", "delay_s")
AGENT_HEADER = "x-agentvisor-agent"  # PROJECT/ROLE, from the broker
ROLE_IN_BRIEFING = re.compile(r"You are (?:a|an|the) \*\*([a-z][a-z0-9-]*)\*\*")
EVERY_ROLE = "*"

# The dry run's script (`--script dry-run`, `agentvisor up --model scripted`): every agent
# answers its briefing and schedules its own check-in; at that check-in a teammate reports its
# task complete and the orchestrator, at its own, reports the project complete.
DRY_RUN_SCRIPT: dict[str, Any] = {
    "agents": {
        "orchestrator": [
            {"tool": "Bash", "command": "agent checkin 1 'Dry run: review the team'",
             "description": "Schedule a review of the team"},
            {"text": "I am the orchestrator of this dry run. I read the spec, scheduled a "
                     "review of the team in a minute and wait for the teammates' reports."},
            {"when": "Dry run: review the team", "tool": "Bash",
             "command": "agent done 'PROJECT COMPLETE (dry run): every agent answered its "
                        "briefing and scheduled a check-in; nothing was built'",
             "description": "Report the project complete"},
            {"text": "Reported the project complete to the operator. Dry run over."},
        ],
        EVERY_ROLE: [
            {"tool": "Bash", "command": "agent checkin 1 'Dry run: finish the {role} task'",
             "description": "Schedule my own check-in"},
            {"text": "I am the {role} of this dry run. I read my briefing and scheduled a "
                     "check-in in a minute to report my task."},
            {"when": "Dry run: finish the {role} task", "tool": "Bash",
             "command": "agent done '{role}: task complete (dry run)'",
             "description": "Report my task complete"},
            {"text": "Reported my task complete to the orchestrator."},
        ],
    }
}  # fmt: skip


class ScriptError(ValueError):
    """The script is not a list of valid steps; the message says which step and why."""


# --- the script --------------------------------------------------------------------------------


def check_step(step: Any, index: int) -> dict[str, Any]:
    """One step, validated: a reply of the model (see the module docstring)."""
    where = f"step {index}"
    if not isinstance(step, dict):
        raise ScriptError(f"{where} must be a JSON object like {{'text': 'Hello'}}")
    if not any(key in step for key in STEP_KINDS):
        raise ScriptError(f"{where} needs one of {', '.join(STEP_KINDS)}: {step!r}")
    if "tool" in step:
        if not isinstance(step["tool"], str) or not step["tool"]:
            raise ScriptError(f"{where}: 'tool' names a tool, like 'Bash'")
        if "command" not in step and not isinstance(step.get("input"), dict):
            raise ScriptError(f"{where}: a tool step needs 'command' (Bash) or an 'input' object")
    for key in ("text", "command", "when"):
        if key in step and not isinstance(step[key], str):
            raise ScriptError(f"{where}: '{key}' must be a string")
    for key in ("delay_s", "resets_at", "resets_in_s"):
        if key in step and not isinstance(step[key], int | float):
            raise ScriptError(f"{where}: '{key}' must be a number")
    if "error" in step and not isinstance(step["error"], dict):
        raise ScriptError(f"{where}: 'error' must be an object with status, type and message")
    return dict(step)


Steps = list[dict[str, Any]]


def load_script(
    source: str | Path | Sequence[dict[str, Any]] | Mapping[str, Any],
) -> Steps | dict[str, Steps]:
    """The steps from a list, an `{"agents": {ROLE: [...]}}` object, or a JSON file holding
    one (`dry-run`: the built-in team script)."""
    loaded: Any = source
    if isinstance(source, str | Path):
        if str(source) == "dry-run":
            loaded = DRY_RUN_SCRIPT
        else:
            try:
                loaded = json.loads(Path(source).read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise ScriptError(f"cannot read the script {source}: {error}") from None
    elif isinstance(source, tuple):
        loaded = list(source)
    if isinstance(loaded, Mapping):
        agents = loaded.get("agents")
        if set(loaded) != {"agents"} or not isinstance(agents, Mapping):
            raise ScriptError(
                'the script must be a JSON list of steps or an object {"agents": {ROLE: [steps]}}'
            )
        lists: dict[str, Steps] = {}
        for role, steps in agents.items():
            if not isinstance(steps, list):
                raise ScriptError(f"the steps of {role!r} must be a JSON list")
            checked = [check_step(step, i) for i, step in enumerate(steps)]
            for before, after in itertools.pairwise(checked):
                after["answers_tool"] = "tool" in before
            lists[str(role)] = checked
        return lists
    if not isinstance(loaded, list):
        raise ScriptError("the script must be a JSON list of steps or an object of lists")
    return [check_step(step, i) for i, step in enumerate(loaded)]


def is_conversation(body: Any) -> bool:
    """Whether a request is a turn of the agent's conversation rather than a side call: Claude
    Code sends its tools with every turn and none with titles, quota checks and the like."""
    return isinstance(body, dict) and bool(body.get("tools")) and bool(body.get("messages"))


def last_user_text(body: Any) -> str:
    """The text of the last user message: its text blocks and tool results, joined."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return "\n".join(_texts(message.get("content")))
    return ""


def _texts(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                yield block["text"]
            elif block.get("type") == "tool_result":
                yield from _texts(block.get("content"))


def has_tool_result(body: Any) -> bool:
    """Whether the last user message carries a tool's result (the turn after a tool call)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return isinstance(content, list) and any(
                isinstance(b, dict) and b.get("type") == "tool_result" for b in content
            )
    return False


def caller_of(headers: Any, body: Any) -> tuple[str | None, str | None]:
    """(agent, role) of a turn: the broker's `x-agentvisor-agent: PROJECT/ROLE`, else the role
    named in the conversation's first message (the briefing) and Claude Code's user id."""
    given = headers.get(AGENT_HEADER) or ""
    if "/" in given:
        return given, given.rsplit("/", 1)[1]
    messages = body.get("messages") if isinstance(body, dict) else None
    first = messages[0] if isinstance(messages, list) and messages else None
    text = "\n".join(_texts(first.get("content"))) if isinstance(first, dict) else ""
    found = ROLE_IN_BRIEFING.search(text)
    role = found.group(1) if found else None
    metadata = body.get("metadata") if isinstance(body, dict) else None
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return (str(user) if user else role), role


def _for_role(step: dict[str, Any], role: str) -> dict[str, Any]:
    return {k: v.replace("{role}", role) if isinstance(v, str) else v for k, v in step.items()}


class Script:
    """The steps not used yet, one list for everyone or one per agent; thread-safe."""

    def __init__(self, steps: str | Path | Sequence[dict[str, Any]] | Mapping[str, Any]) -> None:
        loaded = load_script(steps)
        self._per_role = loaded if isinstance(loaded, dict) else None
        self._steps = list(enumerate(loaded if isinstance(loaded, list) else []))
        self._agents: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def take(
        self,
        user_text: str,
        agent: str | None = None,
        role: str | None = None,
        tool_result: bool = False,
    ) -> tuple[int | None, dict[str, Any]]:
        """(index, step) answering a turn whose last user message is `user_text`: the first
        step left whose `when` is in that text or that has none; (None, default) when none.
        With a list per agent, the agent's own; a step after a tool step answers only a
        `tool_result` turn."""
        with self._lock:
            if self._per_role is None:
                queue = self._steps
            else:
                key = agent or role or "?"
                if key not in self._agents:
                    mine = self._per_role.get(role or "", self._per_role.get(EVERY_ROLE, []))
                    named = role or "agent"
                    self._agents[key] = [(i, _for_role(s, named)) for i, s in enumerate(mine)]
                queue = self._agents[key]
            for position, (index, step) in enumerate(queue):
                if self._per_role is not None and step.get("answers_tool", False) != tool_result:
                    continue
                when = step.get("when")
                if when is None or when in user_text:
                    del queue[position]
                    return index, step
        return None, {"text": DEFAULT_TEXT}

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._steps) + sum(len(q) for q in self._agents.values())


# --- replies -----------------------------------------------------------------------------------


def _estimate_tokens(value: Any) -> int:
    return max(1, len(json.dumps(value, ensure_ascii=False)) // 4)


def content_blocks(step: dict[str, Any]) -> list[dict[str, Any]]:
    """The assistant's content for a text or tool step."""
    blocks: list[dict[str, Any]] = []
    if "text" in step:
        blocks.append({"type": "text", "text": step["text"]})
    if "tool" in step:
        tool_input = step.get("input")
        if not isinstance(tool_input, dict):
            tool_input = {"command": step["command"]}
            tool_input["description"] = step.get("description", "Run a command")
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_{uuid.uuid4().hex[:24]}",
                "name": step["tool"],
                "input": tool_input,
            }
        )
    return blocks or [{"type": "text", "text": DEFAULT_TEXT}]


def message(step: dict[str, Any], model: str, input_tokens: int) -> dict[str, Any]:
    """The non-streaming answer: one Message object."""
    blocks = content_blocks(step)
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": "tool_use" if blocks[-1]["type"] == "tool_use" else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": _estimate_tokens(blocks),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def stream_events(answer: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The server-sent events of a streamed answer, (event name, data), for a Message."""
    start = {**answer, "content": [], "stop_reason": None}
    start["usage"] = {**answer["usage"], "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(answer["content"]):
        if block["type"] == "text":
            yield _block_start(index, {**block, "text": ""})
            yield "ping", {"type": "ping"}
            for piece in _pieces(block["text"]):
                yield _delta(index, {"type": "text_delta", "text": piece})
        else:
            yield _block_start(index, {**block, "input": {}})
            partial = json.dumps(block["input"])
            yield _delta(index, {"type": "input_json_delta", "partial_json": partial})
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    delta = {"stop_reason": answer["stop_reason"], "stop_sequence": None}
    usage = {"output_tokens": answer["usage"]["output_tokens"]}
    yield "message_delta", {"type": "message_delta", "delta": delta, "usage": usage}
    yield "message_stop", {"type": "message_stop"}


def _block_start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    data = {"type": "content_block_start", "index": index, "content_block": block}
    return "content_block_start", data


def _delta(index: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def _pieces(text: str, size: int = 40) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start : start + size]
    if not text:
        yield ""


def usage_limit_headers(step: dict[str, Any], now: float) -> dict[str, str]:
    """The headers of Anthropic's 429 for a subscription's used-up window, which Claude Code
    reads to show its usage-limit notice with the reset time."""
    resets_at = int(step.get("resets_at") or now + float(step.get("resets_in_s", 3600)))
    claim = str(step.get("claim", "five_hour"))
    short = USAGE_LIMIT_CLAIMS.get(claim, "5h")
    return {
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-reset": str(resets_at),
        "anthropic-ratelimit-unified-representative-claim": claim,
        f"anthropic-ratelimit-unified-{short}-status": "rejected",
        f"anthropic-ratelimit-unified-{short}-reset": str(resets_at),
        f"anthropic-ratelimit-unified-{short}-utilization": "1.0",
        "anthropic-ratelimit-unified-overage-status": "rejected",
        "anthropic-ratelimit-unified-overage-disabled-reason": "org_level_disabled",
        "retry-after": str(max(0, resets_at - int(now))),
    }


def gateway_token(subject: str = "agentvisor-dry-run") -> str:
    """An unsigned token for ANTHROPIC_AUTH_TOKEN that makes Claude Code take this server for
    an auth gateway (a JWT whose audience is `claude-gateway`): it then shows a 429 with the
    `anthropic-ratelimit-unified-*` headers as a subscription's usage-limit notice ("You've
    hit your 5-hour limit · resets 3pm"), not as an API error. Nothing checks the signature."""

    def part(value: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    header, claims = (
        part({"alg": "none", "typ": "JWT"}),
        part({"aud": "claude-gateway", "sub": subject}),
    )
    return f"{header}.{claims}.e30"


def error_body(kind: str, text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": text}}


# --- the server --------------------------------------------------------------------------------


def credential_hash(headers: Any) -> str | None:
    """sha256 of the request's key or bearer token, so a record shows who called without
    holding the secret."""
    value = headers.get("x-api-key") or ""
    if not value:
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        value = token.strip() if scheme.lower() == "bearer" else ""
    return hashlib.sha256(value.encode()).hexdigest() if value else None


class ModelServer:
    """The HTTP server and what it recorded. `start()` serves on a thread (tests); `serve()`
    blocks (the command line)."""

    def __init__(
        self,
        steps: str | Path | Sequence[dict[str, Any]] | Mapping[str, Any] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        record_path: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.script = Script(steps)
        self.record_path = Path(record_path) if record_path else None
        self.requests: list[dict[str, Any]] = []
        # sha256 of credentials answered with a 401, as an expired or revoked one would be.
        self.revoked: set[str] = set()
        self._record_lock = threading.Lock()
        self._clock = clock
        self._thread: threading.Thread | None = None
        self.httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"{self.scheme}://{name}:{port}"

    def start(self) -> ModelServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), name="model-server", daemon=True
        )
        self._thread.start()
        return self

    def serve(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def conversation(self) -> list[dict[str, Any]]:
        """The recorded turns of the conversation (requests that used or could use a step)."""
        with self._record_lock:
            return [r for r in self.requests if r.get("conversation")]

    def record(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False)
        with self._record_lock:
            self.requests.append(entry)
            if self.record_path is not None:
                with self.record_path.open("a", encoding="utf-8") as file:
                    file.write(line + "\n")

    def now(self) -> float:
        return self._clock()


def _handler_for(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        model_server = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agentvisor-model-server"
    disable_nagle_algorithm = True  # small SSE writes go out at once, as from a real server
    model_server: ModelServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # every request is in the record

    # Routing.

    def do_HEAD(self) -> None:
        self._begin("HEAD", None)
        self._send(200, b"", "text/plain")

    def do_GET(self) -> None:
        self._begin("GET", None)
        path = self.path.split("?", 1)[0]
        if path in ("/", "/api/hello"):
            self._json(200, {"message": "hello"})
        elif path.startswith("/v1/models"):
            self._json(200, {"data": [{"id": DEFAULT_MODEL, "type": "model"}], "has_more": False})
        else:
            self._json(404, error_body("not_found_error", f"no {path} here"))

    def do_POST(self) -> None:
        body = self._read_body()
        entry = self._begin("POST", body)
        path = self.path.split("?", 1)[0]
        if entry["credential_sha256"] in self.model_server.revoked:
            entry["rejected"] = True
            if path == "/v1/messages":
                self.model_server.record(entry)
            text = (
                "OAuth token has expired. Please obtain a new token or refresh your existing token."
            )
            self._json(401, error_body("authentication_error", text))
        elif path == "/v1/messages/count_tokens":
            self._json(200, {"input_tokens": _estimate_tokens(body)})
        elif path == "/v1/messages":
            self._messages(body, entry)
        elif path.startswith("/api/event_logging") or path.startswith("/api/claude_code"):
            self._json(200, {})  # telemetry and metrics: accepted, ignored
        else:
            self._json(404, error_body("not_found_error", f"no {path} here"))

    # The Messages API.

    def _messages(self, body: Any, entry: dict[str, Any]) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._json(400, error_body("invalid_request_error", "messages: a list is required"))
            return
        model = str(body.get("model") or DEFAULT_MODEL)
        if is_conversation(body):
            entry["conversation"] = True
            agent, role = caller_of(self.headers, body)
            index, step = self.model_server.script.take(
                last_user_text(body), agent, role, has_tool_result(body)
            )
            entry.update(step=index, agent=agent, role=role)
        else:
            step = {"text": SIDE_TEXT}
        entry["reply"] = {k: v for k, v in step.items() if k not in ("when", "answers_tool")}
        answer = message(step, model, _estimate_tokens(body.get("messages")))
        if not step.get("usage_limit") and not isinstance(step.get("error"), dict):
            entry["usage"] = answer["usage"]  # what the answer reports, for metering tests
        self.model_server.record(entry)
        if step.get("delay_s"):
            time.sleep(float(step["delay_s"]))
        if step.get("usage_limit"):
            headers = usage_limit_headers(step, self.model_server.now())
            text = "This request would exceed your account's rate limit. Please try again later."
            self._json(429, error_body("rate_limit_error", text), headers)
            return
        if isinstance(step.get("error"), dict):
            error = step["error"]
            status = int(error.get("status", 500))
            kind, text = str(error.get("type", "api_error")), str(error.get("message", "error"))
            self._json(status, error_body(kind, text))
            return
        if body.get("stream"):
            self._stream(answer)
        else:
            self._json(200, answer)

    def _stream(self, answer: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        self.end_headers()
        for event, data in stream_events(answer):
            chunk = f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # Plumbing.

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _begin(self, method: str, body: Any) -> dict[str, Any]:
        """The record entry of this request; written when the answer is chosen (POST to
        /v1/messages) or at once."""
        entry: dict[str, Any] = {
            "at": self.model_server.now(),
            "method": method,
            "path": self.path,
            "headers": {
                k.lower(): v for k, v in self.headers.items() if k.lower() not in SECRET_HEADERS
            },
            "body": body,
            # Which credential came, as a hash (a test compares it with the real one's).
            "credential_sha256": credential_hash(self.headers),
        }
        if not (method == "POST" and self.path.split("?", 1)[0] == "/v1/messages"):
            self.model_server.record(entry)
        return entry

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentvisor.testing.model_server",
        description="A scripted Anthropic Messages API for Claude Code test and dry runs.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument(
        "--script",
        help="JSON file: a list of steps, or {'agents': {ROLE: [...]}}; 'dry-run' for the "
        "built-in team script (default: answer OK.)",
    )
    parser.add_argument("--record", help="append every request to this JSON-lines file")
    parser.add_argument("--cert", help="serve HTTPS with this PEM certificate (and --key)")
    parser.add_argument("--key", help="the certificate's PEM private key")
    parser.add_argument(
        "--gateway-token",
        action="store_true",
        help="print a token for ANTHROPIC_AUTH_TOKEN that shows usage limits as a subscriber "
        "sees them, and exit",
    )
    args = parser.parse_args(argv)
    if args.gateway_token:
        print(gateway_token())
        return 0
    try:
        load_script(args.script or [])  # a bad script stops here, with its message
        tls = None
        if args.cert:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(args.cert, args.key)
        server = ModelServer(args.script or [], args.host, args.port, args.record, tls=tls)
    except (ScriptError, OSError) as error:
        print(f"model_server: {error}", file=sys.stderr)
        return 2
    print(f"model server listening on {server.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
