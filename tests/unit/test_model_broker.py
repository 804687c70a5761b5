"""The model broker's pure parts: credentials, headers each way, usage from streamed and plain
answers (the scripted model server's own events), reset times and budgets."""

from __future__ import annotations

import json

import pytest

from agentvisor.model.model_broker import (
    FORWARDED_PATHS,
    Budget,
    Credential,
    UsageMeter,
    budget_hit,
    credential_from_env,
    credential_from_login,
    day_start,
    downstream_headers,
    parse_budget,
    reset_time,
    stand_in,
    upstream_headers,
)
from agentvisor.testing.model_server import message, stream_events

NOW = 1_800_000_000.0


def test_the_hosts_key_wins_then_its_token_then_its_login():
    assert credential_from_env({"ANTHROPIC_API_KEY": "k", "ANTHROPIC_AUTH_TOKEN": "t"}) == (
        Credential("api_key", "k", "ANTHROPIC_API_KEY")
    )
    assert credential_from_env({"ANTHROPIC_AUTH_TOKEN": "t"}).headers() == {  # type: ignore[union-attr]
        "authorization": "Bearer t"
    }
    assert credential_from_env({}) is None
    login = credential_from_login(
        json.dumps({"claudeAiOauth": {"accessToken": "oat", "expiresAt": 1_800_000_000_000}}), "f"
    )
    assert login == Credential("oauth", "oat", "f", 1_800_000_000.0)
    assert credential_from_login("not json", "f") is None
    assert credential_from_login('{"claudeAiOauth": {}}', "f") is None


def test_the_stand_in_is_replaced_and_nothing_of_the_caller_is_forwarded():
    incoming = {
        "x-api-key": "avt_stand_in",
        "Authorization": "Bearer avt_stand_in",
        "Host": "127.0.0.1:7399",
        "Content-Length": "12",
        "Accept-Encoding": "gzip",
        "Connection": "keep-alive",
        "Cookie": "a=b",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "fine-grained-tool-streaming-2025-05-14",
        "x-claude-code-session-id": "s",
    }
    out = upstream_headers(incoming, Credential("api_key", "real", "env"))
    assert out == {
        "x-api-key": "real",
        "accept-encoding": "identity",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "fine-grained-tool-streaming-2025-05-14",
        "x-claude-code-session-id": "s",
    }
    oauth = upstream_headers(incoming, Credential("oauth", "oat", "file"))
    assert oauth["authorization"] == "Bearer oat" and "x-api-key" not in oauth
    assert oauth["anthropic-beta"] == "fine-grained-tool-streaming-2025-05-14,oauth-2025-04-20"


def test_no_answer_header_carries_a_secret_or_a_cookie():
    upstream = {
        "content-type": "text/event-stream",
        "request-id": "req_1",
        "set-cookie": "s=1",
        "transfer-encoding": "chunked",
        "x-echo": "key real-secret here",
        "anthropic-ratelimit-unified-reset": "1800000000",
    }
    assert downstream_headers(upstream, ("real-secret", "avt_x")) == {
        "content-type": "text/event-stream",
        "request-id": "req_1",
        "anthropic-ratelimit-unified-reset": "1800000000",
    }


def test_only_the_messages_api_is_forwarded():
    for path in ("v1/messages", "v1/messages/count_tokens", "v1/models", "v1/models/claude-x"):
        assert FORWARDED_PATHS.fullmatch(path)
    for path in ("v1/organizations/me", "v1/messages/batches", "api/oauth/token", "v1/files", ""):
        assert not FORWARDED_PATHS.fullmatch(path)
    assert stand_in({"authorization": "Bearer avt_1"}) == "avt_1"
    assert stand_in({"authorization": "Basic eA=="}) is None


def sse(answer: dict) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        for name, data in stream_events(answer)
    )


def test_usage_is_read_from_a_stream_cut_anywhere_and_from_a_plain_answer():
    answer = message({"text": "hello world " * 30}, "claude-x", 321)
    answer["usage"]["cache_read_input_tokens"] = 7
    data = sse(answer)
    for size in (1, 7, 100, len(data)):
        meter = UsageMeter(streamed=True)
        for start in range(0, len(data), size):
            meter.feed(data[start : start + size])
        usage = meter.finish()
        assert usage.input_tokens == 321
        assert usage.output_tokens == answer["usage"]["output_tokens"]  # the delta's, not 1
        assert usage.cache_read_input_tokens == 7
        assert usage.model == "claude-x"
    plain = UsageMeter(streamed=False)
    plain.feed(json.dumps(answer).encode())
    assert plain.finish().total == 321 + answer["usage"]["output_tokens"] + 7
    error = UsageMeter(streamed=False)
    error.feed(b'{"type": "error", "error": {"type": "overloaded_error", "message": "x"}}')
    assert error.finish().error == "overloaded_error"


def test_a_429_names_its_reset_by_the_unified_header_then_retry_after_then_the_others():
    assert reset_time(
        {"anthropic-ratelimit-unified-reset": "1800003600", "retry-after": "5"}, NOW
    ) == (1_800_003_600)
    assert reset_time({"retry-after": "30"}, NOW) == NOW + 30
    assert reset_time({"Retry-After": "Fri, 15 Jan 2027 09:00:00 GMT"}, NOW) == NOW + 3600
    both = {
        "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:00Z",
        "anthropic-ratelimit-tokens-reset": "2027-01-15T10:00:00+01:00",
        "anthropic-ratelimit-input-tokens-reset": "garbage",
    }
    assert reset_time(both, NOW) == NOW + 3600
    assert reset_time({}, NOW) is None


def test_budgets_say_which_is_reached_and_how_to_raise_it():
    daily = Budget(agent_tokens_per_day=100)
    assert budget_hit(daily, "p", "dev", 99, 10**9, 0, NOW) is None
    hit = budget_hit(daily, "p", "dev", 100, 0, 0, NOW)
    assert hit is not None and hit.rule == "agent_tokens_per_day"
    assert hit.until == day_start(NOW) + 86400
    assert "agentvisor budget p --agent-tokens-per-day" in hit.message
    project = budget_hit(Budget(project_tokens=5), "p", "dev", 0, 5, 0, NOW)
    assert project is not None and project.until is None and "--project-tokens" in project.message
    hours = budget_hit(Budget(project_hours=1.5), "p", "dev", 0, 0, 5400, NOW)
    assert hours is not None and hours.rule == "project_hours"
    assert budget_hit(Budget(), "p", "dev", 10**9, 10**9, 10**9, NOW) is None


def test_up_budget_items_parse_and_bad_ones_say_what_to_write():
    assert parse_budget(["agent-tokens-per-day=5e5", "project-hours=12"]) == {
        "agent_tokens_per_day": 500000,
        "project_hours": 12.0,
    }
    with pytest.raises(ValueError, match="agent-tokens-per-day"):
        parse_budget(["tokens=5"])
    with pytest.raises(ValueError, match="negative"):
        parse_budget(["project-tokens=-1"])


def test_metric_labels_can_hold_nothing_but_a_name():
    from agentvisor.server.model_usage import label

    assert label('dev"} 1\nagentvisor_x{a="') == "dev___1_agentvisor_x_a__"
    assert label("tester-2.b_c") == "tester-2.b_c"
