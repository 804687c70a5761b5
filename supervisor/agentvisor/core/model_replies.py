"""Reading what the model answered to agentvisor's own requests (model assist): a Messages API
answer's tool call or text, and model text made into bounded, inert data. Pure."""

from __future__ import annotations

import json
import re
from typing import Any

# Control characters (C0 but newline and tab, DEL, C1) and invisible formatting characters.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


class UnusableAnswer(ValueError):
    """The model's answer is not what was asked for; the message says why, in one line."""


def _blocks(answer: Any) -> list[dict[str, Any]]:
    content = answer.get("content") if isinstance(answer, dict) else None
    if not isinstance(content, list):
        raise UnusableAnswer("the model's answer has no content")
    return [block for block in content if isinstance(block, dict)]


def tool_input(answer: Any, tool: str) -> dict[str, Any] | None:
    """The input of the answer's first call of `tool`, if it made one."""
    for block in _blocks(answer):
        if block.get("type") == "tool_use" and block.get("name") == tool:
            value = block.get("input")
            return value if isinstance(value, dict) else None
    return None


def answer_text(answer: Any) -> str:
    """The answer's text blocks, joined."""
    return "\n".join(
        block["text"]
        for block in _blocks(answer)
        if block.get("type") == "text" and isinstance(block.get("text"), str)
    )


def json_object_in(text: str) -> dict[str, Any] | None:
    """The JSON object a text answer holds (perhaps in a code fence), if any."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(text[start : end + 1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def one_line(value: Any, limit: int) -> str:
    """Model text as one line of at most `limit` characters, no control characters."""
    text = " ".join(_CONTROL.sub(" ", str(value)).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def inert_text(value: str, limit: int) -> str:
    """Model text kept as lines, at most `limit` characters, no control characters, no code
    fence that could close the one it is shown in."""
    text = _CONTROL.sub(" ", value.replace("\r\n", "\n").replace("\r", "\n")).strip()
    text = text.replace("```", "'''").replace("~~~", "'''")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
