"""The routing policy's rules, pure."""

from __future__ import annotations

from agentvisor.core.routing import RoutingPolicy, copy_body, copy_roles, policy_from, refusal

POLICY = RoutingPolicy()


def test_critical_messages_between_two_agents_are_copied_to_the_orchestrator():
    assert copy_roles(POLICY, "developer", "tester", "message", "Task complete: parser") == [
        "orchestrator"
    ]
    assert copy_roles(POLICY, "developer", "tester", "deploy", "v2 is out") == ["orchestrator"]
    assert copy_roles(POLICY, "developer", "tester", "message", "lunch?") == []
    # The hub is one of them: nothing to copy.
    assert copy_roles(POLICY, "developer", "orchestrator", "message", "task complete") == []
    assert copy_roles(POLICY, "orchestrator", "tester", "message", "deploy now") == []


def test_strict_hub_spoke_refuses_agent_to_agent_and_says_what_to_do():
    strict = policy_from(POLICY, {"hub_only": True})
    assert refusal(strict, "developer", "orchestrator") is None
    assert refusal(strict, "orchestrator", "tester") is None
    why = refusal(strict, "developer", "tester")
    assert why is not None and "--no-hub-only" in why
    assert refusal(POLICY, "developer", "tester") is None


def test_a_projects_own_values_go_over_the_defaults_and_copies_say_where_it_went():
    own = policy_from(POLICY, {"copy_to": "project-manager", "copy_patterns": ["urgent"]})
    assert own.copy_to == "project-manager" and own.copy_kinds == POLICY.copy_kinds
    assert copy_roles(own, "developer", "tester", "message", "URGENT fix") == ["project-manager"]
    assert copy_roles(own, "developer", "tester", "message", "task complete") == []
    assert copy_body("developer", "tester", "done").startswith(
        "(A copy for you: developer wrote this to tester.)\n"
    )
