"""Role briefings: the Markdown each agent is given first, filled in from a role template.

A project's `.agentvisor/roles/<role>.md`, as committed on its start branch (read by
`project_files`), wins over the packaged `briefings/<role>.md`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from agentvisor.core.team import GENERIC_BRIEFING, template_role, validate_role_name

PLACEHOLDERS = (
    "project",
    "role",
    "reports_to",
    "team",
    "branch",
    "start_branch",
    "checkin_minutes",
    "spec",
)
HEADER = "# agentvisor briefing: {role} on {project}"
# Only these exact names are replaced; any other `{...}` (code in a spec, say) stays as it is.
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_HEADER_LINE = re.compile(r"\A[ \t]*# agentvisor briefing:[^\n]*(?:\n|\Z)")


@dataclass(frozen=True)
class BriefingContext:
    project: str
    reports_to: str  # a role, or "operator" for the orchestrator
    team: tuple[str, ...]  # every role in the project, orchestrator first
    branch: str  # the agent's own branch
    start_branch: str  # the branch the agent's branch was made from
    checkin_minutes: float  # the usual interval between check-ins
    spec: str  # the spec's full text


def render_briefing(
    role: str, context: BriefingContext, overrides: Mapping[str, str] | None = None
) -> str:
    """The briefing for `role`: header line, then the role's template filled in from `context`.

    Templates are looked up as the project's `overrides[role]` ({name: text} of its committed
    `.agentvisor/roles/<name>.md`), the packaged `<role>.md`, the same two for a numbered role's
    base (developer-2 -> developer), then `generic.md`.
    """
    validate_role_name(role)
    template = _template(role, overrides or {})
    values = {
        "project": context.project,
        "role": role,
        "reports_to": context.reports_to,
        "team": ", ".join(f"{r} (you)" if r == role else r for r in context.team),
        "branch": context.branch,
        "start_branch": context.start_branch,
        "checkin_minutes": _minutes(context.checkin_minutes),
        "spec": context.spec,
    }
    header = HEADER.format(role=role, project=" ".join(context.project.split()))
    body = _HEADER_LINE.sub("", template.lstrip("\ufeff"), count=1)
    return f"{header}\n\n{substitute(body, values).strip()}\n"


def substitute(template: str, values: Mapping[str, str]) -> str:
    """Replace `{name}` for the known placeholder names in one pass; leave everything else.

    Values are inserted as they are, so braces in them (or in the template) never matter.
    """
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group()), template)


def template_source(role: str, overrides: Mapping[str, str] | None = None) -> str:
    """Where `role`'s template comes from: `project:<name>.md` or `packaged:<name>.md`."""
    validate_role_name(role)
    for name in dict.fromkeys((role, template_role(role), GENERIC_BRIEFING)):
        if overrides and name in overrides:
            return f"project:{name}.md"
        if _packaged(name).is_file():
            return f"packaged:{name}.md"
    raise AssertionError("the packaged generic.md is missing")  # a broken install


def _template(role: str, overrides: Mapping[str, str]) -> str:
    source = template_source(role, overrides)
    kind, _, file = source.partition(":")
    name = file.removesuffix(".md")
    return overrides[name] if kind == "project" else _packaged(name).read_text("utf-8")


def _packaged(name: str) -> Traversable:
    return resources.files("agentvisor.core").joinpath("briefings", f"{name}.md")


def _minutes(minutes: float) -> str:
    return str(int(minutes)) if float(minutes).is_integer() else f"{minutes:g}"
