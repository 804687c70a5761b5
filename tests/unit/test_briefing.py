"""Role briefings: packaged templates, project overrides and safe placeholder substitution."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentvisor.core.briefing import (
    PLACEHOLDERS,
    BriefingContext,
    render_briefing,
    substitute,
    template_source,
)
from agentvisor.core.team import KNOWN_ROLES, reports_to
from agentvisor.errors import InvalidInput

ALL_TEMPLATES = (*KNOWN_ROLES, "generic")
TEAM = ("orchestrator", "project-manager", "developer", "tester")
SPEC = "# Recipe Box\n\nBuild a web application where home cooks save and share recipes.\n"


def context(role: str = "developer", spec: str = SPEC, checkin_minutes: float = 30.0):
    return BriefingContext(
        project="recipes",
        reports_to=reports_to(role),
        team=TEAM,
        branch=f"agent/{role}",
        start_branch="main",
        checkin_minutes=checkin_minutes,
        spec=spec,
    )


def packaged(name: str) -> str:
    return resources.files("agentvisor.core").joinpath("briefings", f"{name}.md").read_text("utf-8")


def overrides(**templates: str) -> dict[str, str]:
    """A project's committed `.agentvisor/roles/` as `project_files` reads it: {name: text}."""
    return {name.replace("_", "-"): text for name, text in templates.items()}


# --- packaged templates --------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_TEMPLATES)
def test_every_known_role_has_its_own_packaged_template(name: str) -> None:
    assert template_source(name) == f"packaged:{name}.md"


@pytest.mark.parametrize("name", ALL_TEMPLATES)
def test_packaged_template_covers_commands_git_rules_and_ends_with_the_spec(name: str) -> None:
    text = packaged(name)
    commands = (
        'agent checkin MINUTES "NOTE" [--every MINUTES] [--to ROLE]',
        'agent send ROLE "MESSAGE"',
        'agent done "SUMMARY"',
        "agent inbox",
        "agent team",
        "agent whoami",
        "schedule_with_note.sh",
        "send-claude-message.sh",
        "report-completion.sh",
    )
    for command in commands:
        assert command in text, command
    assert "`{branch}`" in text and "{start_branch}" in text
    assert "every 30 minutes" in text
    prose = " ".join(text.split())
    assert "Never push, never merge or check out other branches" in prose
    assert "never rewrite history" in prose
    assert "{team}" in text and "{project}" in text
    assert text.endswith("## The spec\n\n{spec}\n")
    assert len(text.splitlines()) <= 60


@pytest.mark.parametrize("name", ALL_TEMPLATES)
def test_packaged_template_uses_only_known_placeholders(name: str) -> None:
    assert set(re.findall(r"\{(\w+)\}", packaged(name))) <= set(PLACEHOLDERS)


def test_orchestrator_reports_to_the_operator_and_declares_the_project_complete() -> None:
    text = render_briefing("orchestrator", context("orchestrator"))
    assert "You report to the operator; everyone else reports to you." in text
    assert 'agent done "PROJECT COMPLETE: ' in text
    assert 'agent checkin 30 "Review team progress" --every 30' in text


@pytest.mark.parametrize("role", [r for r in ALL_TEMPLATES if r != "orchestrator"])
def test_other_roles_report_to_the_orchestrator(role: str) -> None:
    assert "You report to the **orchestrator**." in render_briefing(role, context(role))


def test_project_manager_coordinates_developers_and_testers() -> None:
    assert "coordinate the developers and testers" in render_briefing(
        "project-manager", context("project-manager")
    )


# --- rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", [*ALL_TEMPLATES, "developer-2", "data-scientist"])
def test_first_line_is_the_stable_header(role: str) -> None:
    text = render_briefing(role, context(role))
    assert text.splitlines()[0] == f"# agentvisor briefing: {role} on recipes"


@pytest.mark.parametrize("role", ALL_TEMPLATES)
def test_rendered_briefing_fills_every_placeholder(role: str) -> None:
    text = render_briefing(role, context(role))
    assert not re.findall(r"\{(?:" + "|".join(PLACEHOLDERS) + r")\}", text)
    assert "`agent/" + role + "`" in text
    assert text.endswith(SPEC)


def test_team_lists_everyone_and_marks_the_reader() -> None:
    text = render_briefing("developer", context("developer"))
    assert "orchestrator, project-manager, developer (you), tester." in text


@pytest.mark.parametrize(("minutes", "shown"), [(30.0, "30"), (15, "15"), (7.5, "7.5")])
def test_checkin_minutes_are_shown_without_a_needless_decimal(minutes, shown) -> None:
    text = render_briefing("developer", context(checkin_minutes=minutes))
    assert f'agent checkin {shown} "Continue:' in text


def test_unknown_role_gets_the_generic_briefing() -> None:
    text = render_briefing("data-scientist", context("data-scientist"))
    assert "You are **data-scientist** on project **recipes**." in text


def test_numbered_role_gets_its_base_role_briefing() -> None:
    text = render_briefing("developer-2", context("developer-2"))
    assert "You are a **developer** on project **recipes**" in text
    assert "developer (you)" not in text  # the team lists developer, not developer-2


def test_invalid_role_name_is_rejected_before_any_override_is_used() -> None:
    with pytest.raises(InvalidInput, match="is not valid"):
        render_briefing("../../etc/passwd", context(), {"../../etc/passwd": "x"})


# --- braces --------------------------------------------------------------------------------

BRACY_SPEC = (
    '# Braces\n\nBuild it: `fn main() { println!("{}", x); }` and {role} {spec} {{project}}\n'
    "{0} {unknown} { } {project\n"
)


def test_braces_in_the_spec_are_left_untouched() -> None:
    text = render_briefing("developer", context(spec=BRACY_SPEC))
    assert text.endswith("## The spec\n\n" + BRACY_SPEC)


def test_braces_in_a_user_template_never_raise() -> None:
    folder = overrides(developer="{0} {unknown} {{role}} { {role} }} {project")
    text = render_briefing("developer", context(), folder)
    assert text.splitlines()[2] == "{0} {unknown} {developer} { developer }} {project"


# --- overrides -----------------------------------------------------------------------------


def test_project_override_wins_over_the_packaged_template() -> None:
    folder = overrides(developer="Custom for {role} on {project}.\n\n{spec}\n")
    assert template_source("developer", folder) == "project:developer.md"
    text = render_briefing("developer", context(), folder)
    header = "# agentvisor briefing: developer on recipes"
    assert text == f"{header}\n\nCustom for developer on recipes.\n\n{SPEC}"


def test_roles_without_an_override_keep_the_packaged_template() -> None:
    folder = overrides(developer="Custom.")
    assert template_source("tester", folder) == "packaged:tester.md"


def test_override_for_a_base_role_applies_to_its_numbered_roles() -> None:
    folder = overrides(developer="Custom developer briefing.")
    assert "Custom developer briefing." in render_briefing("developer-3", context(), folder)


def test_override_for_a_numbered_role_wins_over_its_base_role() -> None:
    folder = overrides(developer="Base.", developer_3="Numbered.")
    assert "Numbered." in render_briefing("developer-3", context(), folder)


def test_generic_override_is_used_for_unknown_roles() -> None:
    folder = overrides(generic="Our generic briefing for {role}.")
    text = render_briefing("designer", context(), folder)
    assert "Our generic briefing for designer." in text


def test_override_that_starts_with_its_own_header_does_not_get_two() -> None:
    folder = overrides(developer="# agentvisor briefing: {role} on {project}\n\nBody.")
    text = render_briefing("developer", context(), folder)
    assert text == "# agentvisor briefing: developer on recipes\n\nBody.\n"


def test_no_overrides_fall_back_to_packaged() -> None:
    assert template_source("developer", {}) == "packaged:developer.md"


# --- properties ----------------------------------------------------------------------------


@given(st.text())
def test_any_spec_text_renders_verbatim_under_the_stable_header(spec: str) -> None:
    text = render_briefing("developer", context(spec=spec))
    assert text.splitlines()[0] == "# agentvisor briefing: developer on recipes"
    assert spec.rstrip() in text


@given(st.text(), st.dictionaries(st.sampled_from(PLACEHOLDERS), st.text()))
def test_substitute_never_raises_and_leaves_text_without_placeholders_alone(
    template: str, values: dict[str, str]
) -> None:
    result = substitute(template, values)
    if not any("{" + name + "}" in template for name in PLACEHOLDERS):
        assert result == template
