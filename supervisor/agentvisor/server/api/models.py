"""The host API's request bodies, the constrained types they share, and the error answers the
OpenAPI schema documents. Every bound here is listed in docs/contracts.md ("Input bounds").

Pydantic does the checking; a value outside its bounds becomes a 422 whose body is
`{"detail": "<field>: <what is wrong>"}` (see `validation_detail`).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from fastapi import Path, Query
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

# The answers live in responses.py; the lease's is named here too, for the inbox's code.
from agentvisor.server.api.responses import LeaseAnswer as LeaseAnswer

# SQLite integers are signed 64-bit: a larger id can name no row (and overflows the driver).
MAX_ROW_ID = 2**63 - 1
MAX_NAME_CHARS = 100  # project names, roles, profiles
MAX_KIND_CHARS = 40
MAX_KEY_CHARS = 200  # idempotency keys
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux
MAX_REASON_CHARS = 2000  # a nack's reason
MAX_STATE_CHARS = 40  # a heartbeat's state
# Structured fields, measured as compact UTF-8 JSON. The shim's heartbeat info is a hash, a
# profile name and a notice line (a few hundred bytes); the limit leaves room and never cuts.
MAX_INFO_BYTES = 16 * 1024
MAX_EVENT_DATA_BYTES = 64 * 1024
MAX_OPTIONS_BYTES = 16 * 1024
MAX_JSON_DEPTH = 20
# Text bodies (messages, notes, summaries) are bounded in bytes by the settings
# (max_body_bytes, max_note_bytes: 413); this only caps what the model will even look at.
MAX_TEXT_CHARS = 2 * 1024 * 1024


def clean_text(value: str) -> str:
    """Refuse text that SQLite, a pane or a JSON answer cannot carry: NUL, lone surrogates."""
    if "\x00" in value:
        raise ValueError("contains a NUL character (\\u0000), which no text field may hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"is not valid Unicode: a lone surrogate (\\u{ord(value[exc.start]):04x}) at "
            f"character {exc.start}; send UTF-8 text"
        ) from None
    return value


def _clean_if_text(value: Any) -> Any:
    # Before pydantic's own str check, whose message for a lone surrogate names no cause.
    return clean_text(value) if isinstance(value, str) else value


CleanText = BeforeValidator(_clean_if_text)


def _check_json(value: Any, where: str = "", depth: int = 0) -> None:
    at = f" (at {where})" if where else ""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_JSON_DEPTH} levels{at}")
    if isinstance(value, str):
        try:
            clean_text(value)
        except ValueError as exc:
            raise ValueError(f"{exc}{at}") from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"holds a number that is not finite (NaN or Infinity){at}")
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if where else str(key)
            try:
                clean_text(str(key))
            except ValueError as exc:
                raise ValueError(f"has a key that {exc}") from None
            _check_json(item, name, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]", depth + 1)


def json_object(limit: int) -> AfterValidator:
    """A JSON object of finite numbers and clean text, at most `limit` bytes as compact JSON;
    refused (never cut) when larger."""

    def check(value: dict[str, Any]) -> dict[str, Any]:
        _check_json(value)
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        if size > limit:
            raise ValueError(f"is {size} bytes as JSON, over the limit of {limit} bytes")
        return value

    return AfterValidator(check)


Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS), CleanText]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS), CleanText]
Kind = Annotated[str, Field(min_length=1, max_length=MAX_KIND_CHARS), CleanText]
Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY_CHARS), CleanText]
FilePath = Annotated[str, Field(min_length=1, max_length=MAX_PATH_CHARS), CleanText]
# Minutes of a delay or a repeat: finite here; the service checks the range (0.01 minutes, or
# the setting min_every_minutes, to a year) and says which range in its 400.
MAX_DELAY_MINUTES = 366 * 24 * 60
Minutes = Annotated[
    float,
    Field(allow_inf_nan=False, description=f"Finite, 0.01 to {MAX_DELAY_MINUTES} minutes."),
]
EpochSeconds = Annotated[float, Field(allow_inf_nan=False)]

# Path and query parameters.
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="A row id (1 to 2^63-1).")]
NamePath = Annotated[str, Path(min_length=1, max_length=MAX_NAME_CHARS), CleanText]
NameQuery = Annotated[
    str | None,
    Query(max_length=MAX_NAME_CHARS),
    CleanText,
]


class Strict(BaseModel):
    """A request body: unknown fields refused, no coercion (a string is not a number)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SendBody(Strict):
    to: Name
    body: Text
    kind: Kind = "message"
    idempotency_key: Key | None = None
    project: Name | None = None


class CheckinBody(Strict):
    note: Text
    minutes: Minutes | None = None
    due_at: EpochSeconds | None = Field(
        default=None,
        description="Epoch seconds, within the window of docs/contracts.md (a day ago to a "
        "year ahead).",
    )
    to: Name | None = None
    every_minutes: Minutes | None = None
    idempotency_key: Key | None = None
    project: Name | None = None


class LeaseRef(Strict):
    lease_id: Annotated[str, Field(min_length=1, max_length=64), CleanText]


class NackBody(LeaseRef):
    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON_CHARS), CleanText] = (
        "not delivered"
    )
    retry: bool = True


class DoneBody(Strict):
    summary: Text


class HeartbeatBody(Strict):
    state: Annotated[str, Field(max_length=MAX_STATE_CHARS), CleanText] | None = None
    info: Annotated[dict[str, Any], json_object(MAX_INFO_BYTES)] | None = None


class EventBody(Strict):
    kind: Kind
    data: Annotated[dict[str, Any], json_object(MAX_EVENT_DATA_BYTES)] | None = None


class ProjectBody(Strict):
    name: Name
    path: Annotated[str, Field(max_length=MAX_PATH_CHARS), CleanText] = ""
    spec_path: FilePath | None = None
    start_branch: Annotated[str, Field(min_length=1, max_length=250), CleanText] | None = None


Pattern = Annotated[str, Field(min_length=1, max_length=200), CleanText]


class RoutingBody(Strict):
    """The project's own routing policy; a field left out keeps its value."""

    copy_to: Name | None = None
    copy_kinds: list[Kind] | None = Field(default=None, max_length=50)
    copy_patterns: list[Pattern] | None = Field(default=None, max_length=50)
    hub_only: bool | None = None


class ProjectStateBody(Strict):
    state: Literal["running", "stopped", "complete", "failed"]


class ProjectModelBody(Strict):
    # The scripted model server of a dry run; the broker sends it no credential.
    upstream: str | None = Field(
        default=None, pattern=r"^http://(127\.0\.0\.1|localhost|\[::1\]):[0-9]{1,5}$"
    )
    script: Annotated[str, Field(max_length=MAX_PATH_CHARS), CleanText] | None = None


class AgentBody(Strict):
    project: Name
    role: Name
    profile: Name = "demo"


class QueueBody(Strict):
    spec_path: FilePath
    project_dir: FilePath | None = None
    options: Annotated[dict[str, Any], json_object(MAX_OPTIONS_BYTES)] = Field(default_factory=dict)


class ActionBody(Strict):
    action: Kind


# -- error answers --------------------------------------------------------------------------
class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of the API: one sentence saying what is wrong."""

    detail: str


_MEANINGS = {
    400: "The request cannot be done as asked (the detail says why).",
    401: "No token, a malformed Authorization header, or an unknown or revoked token.",
    403: "The token may not do this (an agent acting outside its project or as the operator).",
    404: "No such project, agent, message, check-in or queue entry.",
    409: "The thing is not in a state that allows this (already cancelled, lease expired).",
    413: "The request body, or a text in it, is over its size limit.",
    422: "A field is missing, of the wrong type or outside its bounds.",
    429: "Over one of the agent's quotas (docs/limits.md); Retry-After says when to retry.",
    503: "The state database is busy or unavailable; retry shortly.",
    507: "The disk holding the state is full; nothing new can be accepted.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry documenting these error statuses with the real body shape."""
    return {code: {"model": ErrorBody, "description": _MEANINGS[code]} for code in codes}


def json_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The same for a route whose success is not JSON (`/metrics`): its errors still are."""
    schema = {"$ref": "#/components/schemas/ErrorBody"}
    return {
        code: {"description": _MEANINGS[code], "content": {"application/json": {"schema": schema}}}
        for code in codes
    }


# Every route: a body that is not UTF-8 JSON, a bad token, a body over the size limit, a bad
# field, a busy database.
COMMON_ERRORS = errors(400, 401, 413, 422, 503)


def validation_detail(exc: RequestValidationError) -> str:
    """One line naming each bad field and what is wrong with it (never echoing the value)."""
    parts = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return "the request body is not valid JSON: send a JSON object"
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts) or "invalid request"


def route_doc(
    *codes: int, ok: dict[int | str, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: its success answers beyond the default, the errors every
    route may give (COMMON_ERRORS) and its own."""
    return {**(ok or {}), **COMMON_ERRORS, **errors(*codes)}
