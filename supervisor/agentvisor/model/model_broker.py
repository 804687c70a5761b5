"""The model broker's pure parts: which credential replaces an agent's stand-in, which headers
cross in each direction, the usage a response reports (streamed or not), the reset time a 429
names, and whether a budget is reached. The routes are in agentvisor.server.api.model."""

from __future__ import annotations

import calendar
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

# Claude Code 2.1.330 calls these under ANTHROPIC_BASE_URL; nothing else is forwarded, so the
# real credential cannot be spent on the account's admin or billing endpoints.
FORWARDED_PATHS = re.compile(r"v1/messages(/count_tokens)?|v1/models(/[A-Za-z0-9._:-]+)?|api/hello")
# Never forwarded either way: hop-by-hop headers (RFC 9110 7.6.1), the stand-in and the real
# credential, cookies, and lengths and encodings the two HTTP stacks decide for themselves.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
DROPPED_UPSTREAM = HOP_BY_HOP | {
    "host",
    "content-length",
    "accept-encoding",
    "authorization",
    "x-api-key",
    "cookie",
    "forwarded",
    "x-forwarded-for",
    "x-agentvisor-agent",  # only the broker names the agent (a dry run)
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
}
DROPPED_DOWNSTREAM = HOP_BY_HOP | {"content-length", "content-encoding", "set-cookie", "server"}
OAUTH_BETA = "oauth-2025-04-20"  # what Anthropic's API wants beside a Claude login's token
USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
MAX_JSON_BODY = 4 * 1024 * 1024  # a plain answer larger than this is passed on, not metered
DAY_S = 86400


@dataclass(frozen=True)
class Credential:
    """The host's own way into the model API: an API key, a bearer token, or a Claude login."""

    kind: str  # api_key | auth_token | oauth
    secret: str
    source: str  # for messages: which variable or file it came from
    expires_at: float | None = None  # oauth: epoch seconds

    def headers(self) -> dict[str, str]:
        if self.kind == "api_key":
            return {"x-api-key": self.secret}
        return {"authorization": f"Bearer {self.secret}"}


# What a dry run's scripted model server gets instead of a credential: the host's own never
# goes to a project's own upstream.
DRY_RUN_CREDENTIAL = Credential("api_key", "agentvisor-dry-run", "dry run")
AGENT_HEADER = "x-agentvisor-agent"  # PROJECT/ROLE, for a dry run's scripted model only


def credential_from_env(env: Mapping[str, str]) -> Credential | None:
    if env.get("ANTHROPIC_API_KEY"):
        return Credential("api_key", env["ANTHROPIC_API_KEY"], "ANTHROPIC_API_KEY")
    if env.get("ANTHROPIC_AUTH_TOKEN"):
        return Credential("auth_token", env["ANTHROPIC_AUTH_TOKEN"], "ANTHROPIC_AUTH_TOKEN")
    return None


def credential_from_login(text: str, source: str) -> Credential | None:
    """The access token of a Claude Code login file (`~/.claude/.credentials.json`)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    oauth = data.get("claudeAiOauth") if isinstance(data, dict) else None
    if not isinstance(oauth, dict) or not isinstance(oauth.get("accessToken"), str):
        return None
    expires = oauth.get("expiresAt")
    expires_at = float(expires) / 1000 if isinstance(expires, int | float) else None
    return Credential("oauth", oauth["accessToken"], source, expires_at)


def stand_in(headers: Mapping[str, str]) -> str | None:
    """The agent's stand-in credential: Claude Code sends ANTHROPIC_API_KEY as `x-api-key`,
    ANTHROPIC_AUTH_TOKEN as a bearer token."""
    key = (headers.get("x-api-key") or "").strip()
    if key:
        return key
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def upstream_headers(incoming: Mapping[str, str], credential: Credential) -> dict[str, str]:
    """The request's headers as the upstream gets them: the stand-in replaced by the real
    credential, the body's encoding left as it is (identity, so that usage can be read)."""
    out = {k.lower(): v for k, v in incoming.items() if k.lower() not in DROPPED_UPSTREAM}
    out.update(credential.headers())
    out["accept-encoding"] = "identity"
    if credential.kind == "oauth":
        betas = [b.strip() for b in out.get("anthropic-beta", "").split(",") if b.strip()]
        if OAUTH_BETA not in betas:
            out["anthropic-beta"] = ",".join([*betas, OAUTH_BETA])
    return out


def downstream_headers(upstream: Mapping[str, str], secrets: tuple[str, ...]) -> dict[str, str]:
    """The answer's headers as the agent gets them: nothing that holds a secret."""
    return {
        k: v
        for k, v in upstream.items()
        if k.lower() not in DROPPED_DOWNSTREAM and not any(s and s in v for s in secrets)
    }


# --- usage ---------------------------------------------------------------------------------------


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    model: str | None = None
    error: str | None = None  # an error event inside a stream, or the error body's type

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )

    def take(self, usage: Any) -> None:
        """Counts from a `usage` object: later ones (message_delta) replace earlier ones."""
        if not isinstance(usage, dict):
            return
        for name in USAGE_FIELDS:
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                setattr(self, name, value)


@dataclass
class UsageMeter:
    """Reads the usage of one answer from its bytes as they pass: server-sent events
    (message_start, then message_delta) or one JSON body."""

    streamed: bool
    usage: Usage = field(default_factory=Usage)
    _buffer: bytearray = field(default_factory=bytearray)
    _overflow: bool = False

    def feed(self, chunk: bytes) -> None:
        if self._overflow:
            return
        self._buffer += chunk
        if not self.streamed:
            if len(self._buffer) > MAX_JSON_BODY:
                self._overflow = True
                self._buffer.clear()
            return
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_JSON_BODY:
                    self._overflow = True
                    self._buffer.clear()
                return
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            if line.startswith(b"data:"):
                self._event(line[5:].strip())

    def finish(self) -> Usage:
        if not self.streamed and not self._overflow and self._buffer:
            try:
                data = json.loads(bytes(self._buffer))
            except ValueError:
                data = None
            if isinstance(data, dict):
                self.usage.take(data.get("usage"))
                if isinstance(data.get("model"), str):
                    self.usage.model = data["model"][:100]
                error = data.get("error")
                if data.get("type") == "error" and isinstance(error, dict):
                    self.usage.error = str(error.get("type") or "error")[:100]
            self._buffer.clear()
        return self.usage

    def _event(self, raw: bytes) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "message_start" and isinstance(data.get("message"), dict):
            message = data["message"]
            self.usage.take(message.get("usage"))
            if isinstance(message.get("model"), str):
                self.usage.model = message["model"][:100]
        elif kind == "message_delta":
            self.usage.take(data.get("usage"))
        elif kind == "error":
            error = data.get("error")
            self.usage.error = str(error.get("type") if isinstance(error, dict) else "error")[:100]


# --- rate and usage limits ----------------------------------------------------------------------


def _epoch(value: str) -> float | None:
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    match = re.fullmatch(
        r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", value
    )
    if match:
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        offset = match.group(8)
        shift = 0
        if offset != "Z":
            sign = 1 if offset[0] == "+" else -1
            shift = sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60)
        stamp = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
        return stamp - shift + float(match.group(7) or 0)
    return None


def reset_time(headers: Mapping[str, str], now: float) -> float | None:
    """When a 429 says the limit resets, as epoch seconds: the subscription's window
    (`anthropic-ratelimit-unified-reset`), else `retry-after`, else the latest of the other
    `anthropic-ratelimit-*-reset` headers. None when it names no time."""
    lowered = {k.lower(): v for k, v in headers.items()}
    unified = _epoch(lowered.get("anthropic-ratelimit-unified-reset", ""))
    if unified is not None:
        return unified
    retry = lowered.get("retry-after", "").strip()
    if retry:
        if re.fullmatch(r"\d+(\.\d+)?", retry):
            return now + float(retry)
        try:
            return parsedate_to_datetime(retry).timestamp()
        except (TypeError, ValueError):
            pass
    resets = [
        stamp
        for key, value in lowered.items()
        if key.startswith("anthropic-ratelimit-") and key.endswith("-reset")
        for stamp in [_epoch(value)]
        if stamp is not None
    ]
    return max(resets) if resets else None


# --- budgets -------------------------------------------------------------------------------------

BUDGET_KEYS = {
    "agent-tokens-per-day": "agent_tokens_per_day",
    "project-tokens": "project_tokens",
    "project-hours": "project_hours",
}


@dataclass(frozen=True)
class Budget:
    """0 means no limit."""

    agent_tokens_per_day: int = 0
    project_tokens: int = 0
    project_hours: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "agent_tokens_per_day": self.agent_tokens_per_day,
            "project_tokens": self.project_tokens,
            "project_hours": self.project_hours,
        }


@dataclass(frozen=True)
class BudgetHit:
    rule: str  # agent_tokens_per_day | project_tokens | project_hours
    message: str  # what is reached and how to raise it
    until: float | None  # when it lifts by itself (the next UTC day), None: when raised


def day_start(now: float) -> float:
    return now - now % DAY_S


def budget_hit(
    budget: Budget,
    project: str,
    role: str,
    agent_tokens_today: int,
    project_tokens: int,
    project_age_s: float,
    now: float,
) -> BudgetHit | None:
    """The first budget reached, if any, saying how to raise it."""
    raise_it = f"agentvisor budget {project}"
    if budget.project_hours and project_age_s >= budget.project_hours * 3600:
        return BudgetHit(
            "project_hours",
            f"project {project} has run {project_age_s / 3600:.1f} h, its budget is "
            f"{budget.project_hours:g} h; raise it with `{raise_it} --project-hours N`",
            None,
        )
    if budget.project_tokens and project_tokens >= budget.project_tokens:
        return BudgetHit(
            "project_tokens",
            f"project {project} used {project_tokens} tokens, its budget is "
            f"{budget.project_tokens}; raise it with `{raise_it} --project-tokens N`",
            None,
        )
    if budget.agent_tokens_per_day and agent_tokens_today >= budget.agent_tokens_per_day:
        return BudgetHit(
            "agent_tokens_per_day",
            f"{role} used {agent_tokens_today} tokens today (UTC), its budget is "
            f"{budget.agent_tokens_per_day} a day; it continues tomorrow, or raise it with "
            f"`{raise_it} --agent-tokens-per-day N`",
            day_start(now) + DAY_S,
        )
    return None


def parse_budget(items: list[str]) -> dict[str, float]:
    """`KEY=VALUE` items of `up --budget` as Budget fields; ValueError names a bad one."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name = BUDGET_KEYS.get(key.strip())
        if not sep or name is None:
            raise ValueError(
                f"budget {item!r}: use KEY=VALUE with KEY one of {', '.join(BUDGET_KEYS)}"
            )
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"budget {item!r}: {value.strip()!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"budget {item!r} must be a finite number (0: no limit)")
        if number < 0:
            raise ValueError(f"budget {item!r} must not be negative (0: no limit)")
        out[name] = number if name == "project_hours" else int(number)
    return out


def error_body(kind: str, message: str) -> bytes:
    """An answer in the Messages API's error format, so that Claude Code shows `message`."""
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
