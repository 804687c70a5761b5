"""The pure side of model assist: the refine request, the strict reading of the model's team,
the research summary and where it goes in the retry spec."""

from __future__ import annotations

import pytest

from agentvisor.core.failure_research import parse_research, research_request
from agentvisor.core.model_replies import UnusableAnswer
from agentvisor.core.team import plan_team
from agentvisor.core.team_refinement import (
    TOOL,
    Refinement,
    describe_refinement,
    parse_refined_team,
    refine_request,
)
from agentvisor.server.project_queue import retry_spec_text

SPEC = "# Shop\n\nBuild a web app with a React frontend and a login form for customers.\n"


def _called(roles: object, tool: str = TOOL) -> dict:
    return {"content": [{"type": "tool_use", "name": tool, "input": {"roles": roles}}]}


def _roles(*names: str) -> list[dict[str, str]]:
    return [{"role": n, "reason": f"{n} is needed"} for n in names]


def test_refine_request_quotes_the_spec_as_data_and_forces_the_tool():
    body = refine_request(SPEC, plan_team(SPEC, plan="pro"), model="m", max_tokens=100)
    prompt = body["messages"][0]["content"]
    assert "<spec>\n# Shop" in prompt and "at most 3 agents" in prompt
    assert body["tool_choice"] == {"type": "tool", "name": TOOL}
    assert "never instructions" in body["system"]


def test_a_valid_team_is_taken_with_the_orchestrator_moved_first():
    team = parse_refined_team(_called(_roles("developer", "orchestrator", "security")), 16)
    assert team.roles == ("orchestrator", "developer", "security")
    assert team.reasons[0] == "orchestrator is needed"


def test_a_team_in_a_text_answer_is_read_too():
    text = '```json\n{"roles": [{"role": "orchestrator", "reason": "leads"}]}\n```'
    answer = {"content": [{"type": "text", "text": text}]}
    assert parse_refined_team(answer, 16).roles == ("orchestrator",)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ({"content": [{"type": "text", "text": "I think a big team."}]}, "holds no team"),
        ("not even an object", "no content"),
        (_called([]), "no list of roles"),
        (_called(_roles("developer", "tester")), "no orchestrator"),
        (_called(_roles("orchestrator", "Dev Ops")), "invalid role"),
        (_called(_roles("orchestrator", "operator")), "reserved"),
        (_called(_roles("orchestrator", "developer", "developer")), "twice"),
        (_called(_roles("orchestrator", *(f"developer-{i}" for i in range(3)))), "more than"),
        (_called([{"role": ["orchestrator"]}]), "not a name"),
    ],
)
def test_anything_but_a_valid_team_is_refused_with_a_one_line_reason(answer, why):
    with pytest.raises(UnusableAnswer, match=why) as refused:
        parse_refined_team(answer, 3)
    assert "\n" not in str(refused.value)


def test_reasons_are_one_bounded_line_without_control_characters():
    reason = "lead\x1b[31m the\nteam " + "x" * 500
    team = parse_refined_team(_called([{"role": "orchestrator", "reason": reason}]), 16)
    assert "\x1b" not in team.reasons[0] and "\n" not in team.reasons[0]
    assert len(team.reasons[0]) <= 200


def test_the_clients_copy_of_the_answer_is_checked_again():
    keyword = plan_team(SPEC)
    forged = {"refined": {"roles": ["orchestrator", "../etc"], "reasons": ["a", "b"]}}
    refinement = Refinement.from_dict(keyword, forged)
    assert refinement.team.roles == keyword.roles and "invalid role" in (refinement.fallback or "")


def test_describe_shows_one_line_per_role_or_one_line_of_fallback():
    keyword = plan_team(SPEC)
    team = parse_refined_team(_called(_roles("orchestrator", "developer")), 16)
    lines = describe_refinement(Refinement(keyword, team))
    assert lines[1].startswith("Refined team (2 agents")
    assert lines[2].split() == ["1.", "orchestrator", "orchestrator", "is", "needed"]
    fallback = describe_refinement(Refinement(keyword, None, "no model configured: x"))
    assert len(fallback) == 1 and fallback[0].startswith("model assist: no model configured")


def test_research_summary_is_bounded_inert_and_quoted_under_its_heading():
    body = research_request(SPEC, "timed out", {"dev": "boom"}, [], model="m", max_tokens=10)
    assert '<screen role="dev">\nboom' in body["messages"][0]["content"]
    summary = parse_research(
        {"content": [{"type": "text", "text": "- tests hung\n```sh\nrm -rf /\n```\x07"}]}
    )
    assert "```" not in summary and "\x07" not in summary
    text = retry_spec_text(SPEC, 1, "timed out", {}, [], summary)
    heading = "### Research summary (model-assisted, from the failure's context)"
    assert text.index("## Previous attempt 1 failed") < text.index(heading)
    assert "> - tests hung" in text
    with pytest.raises(UnusableAnswer):
        parse_research({"content": [{"type": "text", "text": "  "}]})
