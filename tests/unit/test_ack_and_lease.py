"""Ack and next lease in one round trip (`POST /v1/inbox/{id}/ack?lease_next=true`), on the
Service over a real store: the next message comes leased with the ack, nothing when the inbox
is empty, and a retry after a lost answer gets the same lease back instead of leaving it to
run out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_service_permissions import OPERATOR_CALLER, World, build


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = build(tmp_path)
    yield world
    world.store.close()


def _send(world: World, body: str) -> None:
    world.service.send(OPERATOR_CALLER, "developer", body, project="alpha")


def test_the_ack_brings_the_next_message_leased(world: World) -> None:
    developer = world.agent("alpha/developer")
    _send(world, "one")
    _send(world, "two")
    first = world.service.lease(developer)
    assert first is not None and first["body"] == "one"
    acked, following = world.service.ack_and_lease(developer, first["id"], first["lease_id"])
    assert acked["state"] == "delivered"
    assert following is not None and following["body"] == "two"
    assert following["state"] == "leased" and following["lease_id"]
    acked, following = world.service.ack_and_lease(
        developer, following["id"], following["lease_id"]
    )
    assert acked["body"] == "two" and following is None  # nothing more queued


def test_a_retry_after_a_lost_answer_gets_the_same_lease_again(world: World) -> None:
    developer = world.agent("alpha/developer")
    _send(world, "one")
    _send(world, "two")
    first = world.service.lease(developer)
    assert first is not None
    _, lost = world.service.ack_and_lease(developer, first["id"], first["lease_id"])
    # The answer never reached the shim, which asks again: the ack stands, and the lease
    # of "two" comes back, not a second lease or nothing.
    acked, again = world.service.ack_and_lease(developer, first["id"], first["lease_id"])
    assert acked["state"] == "delivered"
    assert lost is not None and again is not None
    assert (again["id"], again["lease_id"]) == (lost["id"], lost["lease_id"])
    assert world.store.get_message(again["id"])["leases"] == 1


def test_nothing_is_leased_for_a_stopped_project(world: World) -> None:
    developer = world.agent("alpha/developer")
    _send(world, "one")
    _send(world, "two")
    first = world.service.lease(developer)
    assert first is not None
    world.service.set_project_state(OPERATOR_CALLER, "alpha", "stopped")
    acked, following = world.service.ack_and_lease(developer, first["id"], first["lease_id"])
    assert acked["state"] == "delivered" and following is None
