"""Who may do what, on the Service itself (docs/contracts.md "Who may do what"): an agent acts
only as itself, in its own project; the operator may act on any project."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentvisor.clock import FakeClock
from agentvisor.config import Settings
from agentvisor.errors import Forbidden, NotFound
from agentvisor.server.auth import Caller
from agentvisor.server.inbox_waiters import InboxWaiters
from agentvisor.server.metrics import Metrics
from agentvisor.server.service import Service
from agentvisor.store.database import AGENTVISOR, OPERATOR, Row, Store

OPERATOR_CALLER = Caller(OPERATOR)


@dataclass
class World:
    service: Service
    store: Store
    agents: dict[str, Row]  # "alpha/developer" -> agent row

    def agent(self, name: str) -> Caller:
        return Caller("agent", self.store.get_agent_by_id(self.agents[name]["id"]))


def build(tmp_path: Path, **settings: object) -> World:
    store = Store(tmp_path / "agentvisor.db", FakeClock(1_800_000_000.0))
    config = Settings(state_dir=tmp_path, **settings)  # type: ignore[arg-type]
    service = Service(config, store, None, InboxWaiters(), Metrics())
    agents: dict[str, Row] = {}
    for project, roles in (("alpha", ("orchestrator", "developer", "tester")), ("beta", ("qa",))):
        pid = store.upsert_project(project, str(tmp_path / project))["id"]
        for role in roles:
            agents[f"{project}/{role}"] = store.register_agent(pid, role)[0]
    return World(service, store, agents)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = build(tmp_path)
    yield world
    world.store.close()


# -- sending --------------------------------------------------------------------------------
def test_an_agent_sends_only_as_its_own_role(world: World) -> None:
    message, _ = world.service.send(world.agent("alpha/developer"), "tester", "hello")
    assert message["sender"] == "developer"
    assert message["recipient_id"] == world.agents["alpha/tester"]["id"]


def test_an_agent_cannot_send_into_another_project(world: World) -> None:
    developer = world.agent("alpha/developer")
    with pytest.raises(Forbidden, match="cannot act on project 'beta'"):
        world.service.send(developer, "qa", "hi", project="beta")
    with pytest.raises(NotFound, match="unknown agent 'qa'"):
        world.service.send(developer, "qa", "hi")  # roles resolve in its own project only
    assert world.store.list_messages() == []


def test_the_operator_sends_as_operator_to_any_project(world: World) -> None:
    message, _ = world.service.send(OPERATOR_CALLER, "qa", "hi", project="beta")
    assert (message["sender"], message["recipient_id"]) == (OPERATOR, world.agents["beta/qa"]["id"])


# -- the inbox ------------------------------------------------------------------------------
def _leased_for_tester(world: World) -> Row:
    world.service.send(OPERATOR_CALLER, "tester", "for the tester only", project="alpha")
    leased = world.service.lease(world.agent("alpha/tester"))
    assert leased is not None
    return leased


def test_an_agent_cannot_ack_nack_or_extend_another_agents_message(world: World) -> None:
    leased = _leased_for_tester(world)
    developer = world.agent("alpha/developer")
    for act in (
        lambda: world.service.ack(developer, leased["id"], leased["lease_id"]),
        lambda: world.service.nack(developer, leased["id"], leased["lease_id"], "no", False),
        lambda: world.service.extend(developer, leased["id"], leased["lease_id"]),
    ):
        with pytest.raises(NotFound, match="is not in your inbox"):
            act()
    assert world.store.get_message(leased["id"])["state"] == "leased"  # untouched
    world.service.ack(world.agent("alpha/tester"), leased["id"], leased["lease_id"])
    assert world.store.get_message(leased["id"])["state"] == "delivered"


def test_an_agent_reads_and_leases_only_its_own_inbox(world: World) -> None:
    _leased_for_tester(world)
    developer = world.agent("alpha/developer")
    assert world.service.inbox(developer) == []
    assert world.service.lease(developer) is None
    assert [m["body"] for m in world.service.inbox(world.agent("alpha/tester"))] == [
        "for the tester only"
    ]


def test_the_operator_has_no_inbox_to_lease(world: World) -> None:
    for act in (world.service.inbox, world.service.lease, world.service.release):
        with pytest.raises(Forbidden, match="for agents"):
            act(OPERATOR_CALLER)


def test_an_agent_lists_only_the_messages_it_sent_or_receives(world: World) -> None:
    world.service.send(OPERATOR_CALLER, "tester", "secret for tester", project="alpha")
    world.service.send(world.agent("alpha/developer"), "tester", "from developer")
    developer = world.agent("alpha/developer")
    bodies = [m["body"] for m in world.service.messages(developer, None, "tester", None, 50)]
    assert bodies == ["from developer"]
    with pytest.raises(Forbidden):
        world.service.messages(developer, "beta", None, None, 50)
    everything = world.service.messages(OPERATOR_CALLER, None, None, None, 50)
    assert len(everything) == 2


def test_with_agents_read_team_messages_an_agent_lists_its_whole_project(tmp_path: Path) -> None:
    world = build(tmp_path, agents_read_team_messages=True)
    world.service.send(OPERATOR_CALLER, "tester", "secret for tester", project="alpha")
    world.service.send(OPERATOR_CALLER, "qa", "other project", project="beta")
    developer = world.agent("alpha/developer")
    assert [m["body"] for m in world.service.messages(developer, None, None, None, 50)] == [
        "secret for tester"
    ]
    world.store.close()


# -- check-ins ------------------------------------------------------------------------------
def _checkins(world: World) -> dict[str, int]:
    """One check-in of each owner, all for alpha's developer, plus one in beta."""
    service = world.service

    def schedule(caller: Caller, **how: object) -> int:
        return int(service.schedule(caller, "note", minutes=5, **how)[0]["id"])  # type: ignore[arg-type]

    developer = world.agents["alpha/developer"]
    agentvisor, _ = world.store.add_checkin(
        developer["project_id"], AGENTVISOR, developer["id"], "resume", 2e9
    )
    return {
        "own": schedule(world.agent("alpha/developer")),
        "tester": schedule(world.agent("alpha/tester"), to="developer"),
        "operator": schedule(OPERATOR_CALLER, to="developer", project="alpha"),
        "agentvisor": int(agentvisor["id"]),
        "beta": schedule(world.agent("beta/qa")),
    }


def test_an_agent_cancels_a_check_in_it_scheduled_itself(world: World) -> None:
    ids = _checkins(world)
    row = world.store.get_checkin(ids["own"])  # its owner comes from the caller, never the body
    assert (row["creator"], row["created_by"]) == (
        "developer",
        world.agents["alpha/developer"]["id"],
    )
    cancelled = world.service.cancel_checkin(world.agent("alpha/developer"), ids["own"])
    assert cancelled["state"] == "cancelled"


@pytest.mark.parametrize(
    ("owner", "by"),
    [
        ("tester", "another agent (tester)"),
        ("operator", "the operator"),
        ("agentvisor", "agentvisor"),
    ],
)
def test_an_agent_cannot_cancel_a_check_in_someone_else_scheduled(
    world: World, owner: str, by: str
) -> None:
    ids = _checkins(world)  # all three are for the developer: receiving one is not owning it
    with pytest.raises(Forbidden, match=re.escape(f"scheduled by {by}; an agent may cancel only")):
        world.service.cancel_checkin(world.agent("alpha/developer"), ids[owner])
    assert world.store.get_checkin(ids[owner])["state"] == "pending"


def test_an_agent_cannot_touch_another_projects_check_ins(world: World) -> None:
    ids = _checkins(world)
    developer = world.agent("alpha/developer")
    with pytest.raises(NotFound, match="in this project"):
        world.service.cancel_checkin(developer, ids["beta"])
    with pytest.raises(Forbidden, match="cannot act on project 'beta'"):
        world.service.schedule(developer, "n", minutes=5, project="beta")
    with pytest.raises(Forbidden):
        world.service.checkins(developer, "beta", None)
    listed = {c["id"] for c in world.service.checkins(developer, None, None)}
    assert ids["beta"] not in listed
    assert world.store.get_checkin(ids["beta"])["state"] == "pending"


def test_an_agent_lists_only_the_check_ins_it_scheduled_or_receives(world: World) -> None:
    ids = _checkins(world)
    orchestrator = world.agent("alpha/orchestrator")
    mine = world.service.schedule(orchestrator, "orchestrator's own", minutes=5)[0]["id"]
    assert {c["id"] for c in world.service.checkins(orchestrator, None, None)} == {mine}
    tester = {c["id"] for c in world.service.checkins(world.agent("alpha/tester"), None, None)}
    assert tester == {ids["tester"]}  # it scheduled it, though the developer receives it


def test_the_operator_cancels_any_check_in_of_any_project(world: World) -> None:
    ids = _checkins(world)
    for checkin_id in ids.values():
        assert world.service.cancel_checkin(OPERATOR_CALLER, checkin_id)["state"] == "cancelled"


# -- operator-only actions ------------------------------------------------------------------
def test_operator_only_actions_refuse_an_agent(world: World) -> None:
    message, _ = world.service.send(OPERATOR_CALLER, "tester", "x", project="alpha")
    developer = world.agent("alpha/developer")
    for act in (
        lambda: world.service.change_message(developer, message["id"], "cancel"),
        lambda: world.service.register_agent(developer, "alpha", "intruder", "demo"),
        lambda: world.service.set_project_state(developer, "alpha", "stopped"),
        lambda: world.service.release_project(developer, "alpha"),
        lambda: world.service.set_routing(developer, "alpha", {"hub_only": True}),
        lambda: world.service.queue_list(developer, None),
        lambda: world.service.queue_cancel(developer, 1),
    ):
        with pytest.raises(Forbidden, match="needs the operator token"):
            act()
    assert world.store.get_message(message["id"])["state"] == "queued"
    assert world.store.get_project("alpha")["state"] == "created"


def test_an_agent_sees_only_its_own_projects_agents_and_own_events(world: World) -> None:
    developer = world.agent("alpha/developer")
    roles = {a["role"] for a in world.service.agents(developer, None)}
    assert roles == {"orchestrator", "developer", "tester"}
    with pytest.raises(Forbidden):
        world.service.agents(developer, "beta")
    world.service.event(world.agent("alpha/tester"), "note", {"private": True})
    world.service.event(developer, "note", {"mine": True})
    events = world.service.events(developer, None, 100)
    assert {e["agent_id"] for e in events} == {world.agents["alpha/developer"]["id"]}


# -- strict hub-spoke -----------------------------------------------------------------------
def test_under_strict_hub_spoke_an_agent_cannot_message_a_peer_directly(tmp_path: Path) -> None:
    world = build(tmp_path, routing_hub_only=True)
    with pytest.raises(Forbidden, match="strict hub-spoke"):
        world.service.send(world.agent("alpha/developer"), "tester", "psst")
    world.service.send(world.agent("alpha/developer"), "orchestrator", "via the hub")
    world.store.close()


def test_under_strict_hub_spoke_an_agent_cannot_reach_a_peer_with_a_check_in(
    tmp_path: Path,
) -> None:
    world = build(tmp_path, routing_hub_only=True)
    try:
        with pytest.raises(Forbidden, match="strict hub-spoke"):
            world.service.schedule(world.agent("alpha/developer"), "psst", 0.01, to="tester")
    finally:
        world.store.close()


def test_under_strict_hub_spoke_check_ins_for_oneself_and_from_the_hub_still_go(
    tmp_path: Path,
) -> None:
    world = build(tmp_path, routing_hub_only=True)
    try:
        world.service.schedule(world.agent("alpha/developer"), "mine", 0.01)
        world.service.schedule(world.agent("alpha/developer"), "hub", 0.01, to="orchestrator")
        world.service.schedule(world.agent("alpha/orchestrator"), "go", 0.01, to="tester")
    finally:
        world.store.close()
