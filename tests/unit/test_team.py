"""Team composition: project-type recognition, the team per type, and the overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentvisor.core.team import (
    KNOWN_ROLES,
    MAX_COUNTED_REPEATS,
    MAX_ROLE_NAME_CHARS,
    MAX_TEAM_SIZE,
    PLAN_LIMITS,
    PROJECT_TYPES,
    classify,
    describe_plan,
    plan_team,
    project_type_names,
    reports_to,
    template_role,
    validate_role_name,
)
from agentvisor.errors import InvalidInput

SPECS = Path(__file__).resolve().parent.parent / "data" / "specs"

# One realistic sample spec per type lives in tests/data/specs/<type>.md.
EXPECTED_TEAMS = {
    name: tuple(team.split())
    for name, team in {
        "web-application": "orchestrator project-manager developer tester test-runner",
        "api-service": "orchestrator project-manager developer tester security test-runner",
        "library": "orchestrator developer tester reviewer docs",
        "data-pipeline": "orchestrator project-manager developer tester devops test-runner",
        "system-deployment": "orchestrator project-manager sysadmin devops security",
        "infrastructure-as-code": "orchestrator project-manager devops security reviewer",
        "cli-tool": "orchestrator developer tester test-runner docs",
        "mobile-app": "orchestrator project-manager developer tester test-runner",
        "general": "orchestrator project-manager developer tester",
    }.items()
}


def sample(project_type: str) -> str:
    return (SPECS / f"{project_type}.md").read_text(encoding="utf-8")


def test_there_is_a_sample_spec_for_every_project_type() -> None:
    assert {p.stem for p in SPECS.glob("*.md")} == set(project_type_names())
    assert set(EXPECTED_TEAMS) == set(project_type_names())


@pytest.mark.parametrize("project_type", sorted(EXPECTED_TEAMS))
def test_sample_spec_is_recognised_and_gets_its_team(project_type: str) -> None:
    plan = plan_team(sample(project_type))
    assert plan.project_type == project_type
    assert plan.roles == EXPECTED_TEAMS[project_type]
    assert plan.dropped == ()


@pytest.mark.parametrize("project_type", PROJECT_TYPES, ids=lambda t: t.name)
def test_every_team_starts_with_the_orchestrator_and_uses_known_roles(project_type) -> None:
    assert project_type.team[0] == "orchestrator"
    assert set(project_type.team) <= set(KNOWN_ROLES)
    assert len(set(project_type.team)) == len(project_type.team)


def test_every_keyword_is_recognised_in_a_sentence() -> None:
    for project_type in PROJECT_TYPES:
        for keyword, _ in project_type.keywords:
            found = {
                m.keyword for s in classify(f"We use {keyword} here.").scores for m in s.matches
            }
            assert keyword in found, (project_type.name, keyword)


def test_reasons_name_the_matched_words_and_the_runner_up() -> None:
    reason = plan_team(sample("system-deployment")).reasons[0]
    assert reason.startswith("Recognised a system deployment (score ")
    assert "nginx" in reason and "systemd" in reason and "deploy ×2" in reason
    assert "next best" in reason


def test_plurals_hyphens_and_line_breaks_match_keywords() -> None:
    found = classify("Two endpoints, a Command-Line\ntool and web-apps.").scores
    words = {m.keyword for s in found for m in s.matches}
    assert {"endpoint", "command line", "web app"} <= words


def test_keyword_inside_another_word_does_not_match() -> None:
    result = classify("A rapid, capital guide to building tiles in Brazil")
    assert result.best.score == 0
    assert result.project_type == "general"


def test_longest_phrase_wins_where_keywords_overlap() -> None:
    result = classify("A React Native app")
    words = {m.keyword for s in result.scores for m in s.matches}
    assert "react native" in words
    assert "react" not in words


def test_repeated_keyword_counts_at_most_three_times() -> None:
    match = classify("terraform " * 10).best.matches[0]
    assert match.count == 10
    assert match.points == 5 * MAX_COUNTED_REPEATS


def test_weak_signals_fall_back_to_the_general_team() -> None:
    plan = plan_team("Put our family photos on one page, sorted by year.")
    assert plan.project_type == "general"
    assert "No project type scored" in plan.reasons[0]


def test_spec_without_any_keyword_explains_the_general_team() -> None:
    plan = plan_team(sample("general"))
    assert plan.reasons[0] == "No project-type keywords matched, so the general team is used."


# --- team_type -----------------------------------------------------------------------------


def test_team_type_forces_the_type_whatever_the_spec_says() -> None:
    plan = plan_team(sample("web-application"), team_type="system-deployment")
    assert plan.project_type == "system-deployment"
    assert plan.roles == EXPECTED_TEAMS["system-deployment"]
    assert plan.reasons[0] == "Project type system deployment was given, so the spec was not read."


@pytest.mark.parametrize("spelling", ["cli_tool", "CLI-Tool", " cli tool "])
def test_team_type_accepts_underscores_spaces_and_capitals(spelling: str) -> None:
    assert plan_team("", team_type=spelling).project_type == "cli-tool"


def test_unknown_team_type_is_rejected_listing_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        plan_team("", team_type="game")
    assert "'game' is not known" in caught.value.message
    for name in project_type_names():
        assert name in caught.value.message


# --- roles ----------------------------------------------------------------------------------


def test_roles_replace_the_recognised_team() -> None:
    plan = plan_team(sample("web-application"), roles=["orchestrator", "developer", "docs"])
    assert plan.project_type == "web-application"
    assert plan.roles == ("orchestrator", "developer", "docs")


def test_roles_may_be_a_comma_separated_string() -> None:
    roles = plan_team("", roles=" developer, tester ,").roles
    assert roles == ("orchestrator", "developer", "tester")


def test_orchestrator_is_added_first_when_missing() -> None:
    plan = plan_team("", roles=["developer"])
    assert plan.roles == ("orchestrator", "developer")
    assert any("orchestrator was added first" in r for r in plan.reasons)


def test_orchestrator_is_moved_first_when_listed_later() -> None:
    plan = plan_team("", roles=["developer", "orchestrator", "tester"])
    assert plan.roles == ("orchestrator", "developer", "tester")
    assert any("orchestrator was moved first" in r for r in plan.reasons)


def test_unknown_but_valid_roles_are_allowed() -> None:
    roles = plan_team("", roles=["data-scientist", "qa2"]).roles
    assert roles == ("orchestrator", "data-scientist", "qa2")


def test_duplicate_role_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="'developer' is listed twice"):
        plan_team("", roles=["developer", "tester", "developer"])


def test_duplicate_orchestrator_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="'orchestrator' is listed twice"):
        plan_team("", roles=["orchestrator", "orchestrator"])


@pytest.mark.parametrize(
    "role",
    ["Developer", "1dev", "dev_1", "dev ops", "../etc", "-dev", "dév", "a" * 33, "", "dev\n"],
)
def test_bad_role_name_is_rejected(role: str) -> None:
    with pytest.raises(InvalidInput, match="is not valid"):
        validate_role_name(role)


def test_bad_role_name_in_roles_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="role name 'test er' is not valid"):
        plan_team("", roles=["developer", "Test er"])


def test_blank_entry_in_roles_list_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="role name '' is not valid"):
        plan_team("", roles=["developer", " "])


def test_operator_is_not_a_role_name() -> None:
    with pytest.raises(InvalidInput, match="'operator' is reserved"):
        plan_team("", roles=["developer", "operator"])


def test_role_name_of_the_maximum_length_is_accepted() -> None:
    name = "a" * MAX_ROLE_NAME_CHARS
    assert validate_role_name(name) == name


def test_empty_roles_list_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="roles list is empty"):
        plan_team("", roles=[])


def test_team_of_the_maximum_size_is_accepted() -> None:
    roles = [f"developer-{n}" for n in range(MAX_TEAM_SIZE - 1)]
    assert len(plan_team("", roles=roles).roles) == MAX_TEAM_SIZE


def test_more_roles_than_a_team_may_have_is_rejected() -> None:
    expected = f"team of {MAX_TEAM_SIZE + 1} agents with the orchestrator, more than the"
    with pytest.raises(InvalidInput, match=expected):
        plan_team("", roles=[f"developer-{n}" for n in range(MAX_TEAM_SIZE)])


# --- plan caps ------------------------------------------------------------------------------

NINE_ROLES = "developer tester docs reviewer security devops sysadmin test-runner project-manager"


@pytest.mark.parametrize(("plan", "size"), sorted(PLAN_LIMITS.items()))
def test_plan_caps_the_team_size(plan: str, size: int) -> None:
    result = plan_team("", roles=NINE_ROLES.split(), plan=plan)
    assert len(result.roles) == min(size, 10)
    assert result.roles[0] == "orchestrator"
    assert len(result.dropped) == max(10 - size, 0)


def test_the_old_tools_plan_team_type_and_role_spellings_are_accepted() -> None:
    """`--plan console` (API billing: no cap but the team size), `--team-type code_project`
    (the general team) and `documentation_writer` (documentation-writer), said in the reasons."""
    result = plan_team("", roles="Developer,documentation_writer", plan="console",
                       team_type="code_project")  # fmt: skip
    assert result.project_type == "general"
    assert result.roles == ("orchestrator", "developer", "documentation-writer")
    assert result.dropped == ()
    assert any("documentation_writer as documentation-writer" in r for r in result.reasons)


def test_plan_cap_cuts_the_least_important_roles_first() -> None:
    result = plan_team(sample("web-application"), plan="pro")
    assert result.roles == ("orchestrator", "developer", "tester")
    assert result.dropped == ("project-manager", "test-runner")
    assert "Plan pro allows 3 agents, so project-manager, test-runner were left out." in (
        result.reasons
    )


@pytest.mark.parametrize(
    ("project_type", "kept"),
    [
        ("system-deployment", ("orchestrator", "sysadmin", "devops")),
        ("infrastructure-as-code", ("orchestrator", "devops", "security")),
        ("library", ("orchestrator", "developer", "tester")),
    ],
)
def test_pro_plan_keeps_the_roles_that_do_the_work(project_type: str, kept: tuple) -> None:
    assert plan_team(sample(project_type), plan="pro").roles == kept


def test_plan_cap_cuts_explicit_roles_from_the_end_of_the_list() -> None:
    result = plan_team("", roles=["docs", "developer", "tester", "reviewer"], plan="pro")
    assert result.roles == ("orchestrator", "docs", "developer")
    assert result.dropped == ("tester", "reviewer")


def test_plan_never_cuts_the_orchestrator_even_when_listed_last() -> None:
    result = plan_team("", roles=["a", "b", "c", "orchestrator"], plan="pro")
    assert result.roles == ("orchestrator", "a", "b")


def test_team_that_fits_the_plan_is_not_cut() -> None:
    result = plan_team(sample("library"), plan="max5")
    assert result.roles == EXPECTED_TEAMS["library"]
    assert result.dropped == ()
    assert result.plan == "max5"
    assert not any("left out" in r for r in result.reasons)


def test_plan_name_is_case_insensitive() -> None:
    assert len(plan_team(sample("web-application"), plan=" Pro ").roles) == 3


def test_unknown_plan_is_rejected_listing_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match="'team' is not known; use one of: pro, max5, max20"):
        plan_team("", plan="team")


# --- reporting and description ------------------------------------------------------------


def test_orchestrator_reports_to_the_operator_and_everyone_else_to_it() -> None:
    assert reports_to("orchestrator") == "operator"
    assert reports_to("developer") == "orchestrator"
    assert reports_to("data-scientist") == "orchestrator"


@pytest.mark.parametrize(
    ("role", "template"),
    [
        ("developer", "developer"),
        ("developer-2", "developer"),
        ("test-runner", "test-runner"),
        ("test-runner-10", "test-runner"),
        ("qa-1", "generic"),
        ("designer", "generic"),
    ],
)
def test_numbered_roles_use_their_base_role_briefing(role: str, template: str) -> None:
    assert template_role(role) == template


def test_describe_plan_lists_type_team_reporting_and_reasons() -> None:
    lines = describe_plan(
        plan_team(sample("web-application"), roles="developer,designer", plan="pro")
    )
    assert lines[0] == "Project type: web application (web-application)"
    assert lines[1] == "Team (3 agents, plan pro):"
    assert lines[2] == "  1. orchestrator  reports to operator"
    assert lines[3] == "  2. developer     reports to orchestrator"
    assert lines[4] == "  3. designer      reports to orchestrator, generic briefing"
    assert "Left out: " not in "\n".join(lines)
    assert "Why:" in lines
    assert lines[-1].startswith("  - Team given with roles:")


def test_describe_plan_shows_dropped_roles() -> None:
    lines = describe_plan(plan_team(sample("web-application"), plan="pro"))
    assert "Left out: project-manager, test-runner" in lines


@pytest.mark.timeout(20)
@pytest.mark.parametrize("filler", [" ", "- ", "ab cd ", "command "], ids=repr)
def test_classifying_a_spec_of_the_maximum_size_takes_linear_time(filler: str) -> None:
    assert plan_team(filler * (1024 * 1024 // len(filler))).roles[0] == "orchestrator"


# --- properties -----------------------------------------------------------------------------


@given(st.text(), st.sampled_from([None, *PLAN_LIMITS]))
def test_any_text_classifies_without_raising_and_orchestrator_is_first(text, plan) -> None:
    result = plan_team(text, plan=plan)
    assert result.roles[0] == "orchestrator"
    assert result.project_type in project_type_names()
    assert len(set(result.roles)) == len(result.roles)
    if plan:
        assert len(result.roles) <= PLAN_LIMITS[plan]
    assert describe_plan(result)


@given(
    st.lists(
        st.from_regex(r"[a-z][a-z0-9-]{0,31}", fullmatch=True).filter(lambda r: r != "operator"),
        min_size=1,
        max_size=MAX_TEAM_SIZE - 1,
        unique=True,
    )
)
def test_any_valid_roles_give_a_team_led_by_the_orchestrator(roles: list[str]) -> None:
    result = plan_team("", roles=roles)
    assert result.roles[0] == "orchestrator"
    assert set(result.roles) == {"orchestrator", *roles}
    assert [r for r in result.roles if r != "orchestrator"] == [
        r for r in roles if r != "orchestrator"
    ]
