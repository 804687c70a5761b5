"""Hub-spoke routing (the old Tmux Orchestrator copied critical messages to the orchestrator):
which roles get a copy of a message between two agents, and which messages a strict hub-spoke
project refuses. Pure: the policy comes from the operator's settings and the project's own
(`agentvisor routing PROJECT ...`), never from the project's files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

HUB = "orchestrator"


@dataclass(frozen=True)
class RoutingPolicy:
    copy_to: str = HUB  # the role that gets the copies
    # A message between two agents is copied when its kind is one of these, or when its body
    # holds one of the patterns (case does not matter).
    copy_kinds: tuple[str, ...] = ("completion", "failure", "blocked", "deploy")
    copy_patterns: tuple[str, ...] = ("task complete", "deploy", "failed", "blocked")
    hub_only: bool = False  # agents may message only the hub (and the hub anyone)

    def as_dict(self) -> dict[str, Any]:
        return {
            "copy_to": self.copy_to,
            "copy_kinds": list(self.copy_kinds),
            "copy_patterns": list(self.copy_patterns),
            "hub_only": self.hub_only,
        }


def policy_from(default: RoutingPolicy, own: Mapping[str, Any] | None) -> RoutingPolicy:
    """`default` (the settings') with a project's own values over it."""
    if not own:
        return default
    changes: dict[str, Any] = {}
    if isinstance(own.get("copy_to"), str):
        changes["copy_to"] = own["copy_to"]
    for key in ("copy_kinds", "copy_patterns"):
        if isinstance(own.get(key), list):
            changes[key] = tuple(str(item) for item in own[key])
    if isinstance(own.get("hub_only"), bool):
        changes["hub_only"] = own["hub_only"]
    return replace(default, **changes)


def refusal(policy: RoutingPolicy, sender: str, recipient: str) -> str | None:
    """Why an agent's message may not go, under strict hub-spoke; None when it may."""
    if not policy.hub_only or policy.copy_to in (sender, recipient):
        return None
    return (
        f"this project routes every message through the {policy.copy_to} (strict hub-spoke): "
        f"send it to the {policy.copy_to}, who passes it on; the operator can allow direct "
        "messages with 'agentvisor routing PROJECT --no-hub-only'"
    )


def copy_roles(
    policy: RoutingPolicy, sender: str, recipient: str, kind: str, body: str
) -> list[str]:
    """The roles that get a copy of this message between two agents (none when the hub is
    one of them)."""
    if policy.copy_to in (sender, recipient):
        return []
    lowered = body.lower()
    critical = kind in policy.copy_kinds or any(
        pattern.lower() in lowered for pattern in policy.copy_patterns if pattern
    )
    return [policy.copy_to] if critical else []


def copy_body(sender: str, recipient: str, body: str) -> str:
    """A copy says whom the original went to; the header names its sender as for any message."""
    return f"(A copy for you: {sender} wrote this to {recipient}.)\n{body}"
