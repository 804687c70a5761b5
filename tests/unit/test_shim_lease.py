"""What the shim reads from a lease: whether the message can have been typed before."""

from __future__ import annotations

import pytest

from agent_shim.client import Lease


@pytest.mark.parametrize(
    ("fields", "first"),
    [
        ({"leases": 1}, True),  # never handed out before: the pane needs no search
        ({"leases": 2}, False),
        ({"leases": 7}, False),
        ({}, False),  # an older server that does not count: search, as before
        ({"leases": None}, False),
        ({"leases": "1"}, False),
    ],
)
def test_only_a_counted_first_lease_skips_the_history_search(fields, first):
    lease = Lease({"id": 3, "marker": "av-3", "body": "x", **fields}, "lease", 0.0)
    assert lease.first_lease is first
