"""The pure parts of the agents' git channel: routes, pkt-lines, the push rules."""

from __future__ import annotations

import pytest

from agentvisor.errors import InvalidInput, NotFound
from agentvisor.git.git_http import (
    RECEIVE,
    UPLOAD,
    RefUpdate,
    check_updates,
    parse_route,
    pkt,
    read_pkt_lines,
    ref_updates,
    refusal_report,
)

OLD, NEW, ZERO = "a" * 40, "b" * 40, "0" * 40


def test_only_the_smart_protocol_routes_are_served() -> None:
    assert parse_route("GET", "project.git", "info/refs", UPLOAD).advertise
    assert parse_route("POST", "project.git", RECEIVE, None).service == RECEIVE
    for method, repo, rest, service in (
        ("GET", "project.git", "HEAD", None),
        ("GET", "project.git", "objects/info/packs", None),
        ("GET", "project.git", "config", None),
        ("POST", "project.git", "git-upload-archive", None),
        ("GET", "../etc", "info/refs", UPLOAD),
        ("GET", "project", "info/refs", UPLOAD),
    ):
        with pytest.raises(NotFound):
            parse_route(method, repo, rest, service)
    with pytest.raises(InvalidInput, match="smart HTTP"):
        parse_route("GET", "project.git", "info/refs", None)


def test_pkt_lines_are_read_up_to_the_flush() -> None:
    data = pkt(b"one\n") + pkt(b"two\n") + b"0000" + b"PACK..."
    assert read_pkt_lines(data) == ([b"one\n", b"two\n"], True)
    assert read_pkt_lines(data[:6]) == ([], False)
    with pytest.raises(InvalidInput):
        read_pkt_lines(b"zzzz")


def test_ref_updates_drop_capabilities_and_shallow_lines() -> None:
    lines = [
        f"shallow {OLD}\n".encode(),
        f"{OLD} {NEW} refs/heads/agent/dev\0report-status side-band-64k\n".encode(),
        f"{ZERO} {NEW} refs/tags/v1\n".encode(),
    ]
    assert ref_updates(lines) == [
        RefUpdate(OLD, NEW, "refs/heads/agent/dev"),
        RefUpdate(ZERO, NEW, "refs/tags/v1"),
    ]


@pytest.mark.parametrize(
    "line",
    [
        b"push-cert\0report-status\n",
        f"{OLD} {NEW}\n".encode(),
        f"{OLD} nothex refs/heads/x\n".encode(),
        f"{OLD} {NEW} refs/heads/\x1b]52;c;aGk=\x07\n".encode(),
        f"{OLD} {NEW} HEAD\n".encode(),
    ],
)
def test_anything_but_a_plain_ref_update_is_refused(line: bytes) -> None:
    with pytest.raises(InvalidInput):
        ref_updates([line])


def test_an_agent_may_update_its_own_branch_only_and_never_delete_it() -> None:
    own = RefUpdate(OLD, NEW, "refs/heads/agent/dev")
    assert check_updates([own], "dev") == {}
    problems = check_updates(
        [
            RefUpdate(OLD, NEW, "refs/heads/main"),
            RefUpdate(OLD, NEW, "refs/heads/agent/qa"),
            RefUpdate(OLD, NEW, "refs/heads/agent/dev-evil"),
            RefUpdate(ZERO, NEW, "refs/tags/v1"),
            RefUpdate(OLD, ZERO, "refs/heads/agent/dev"),
        ],
        "dev",
    )
    assert set(problems) == {
        "refs/heads/main",
        "refs/heads/agent/qa",
        "refs/heads/agent/dev-evil",
        "refs/tags/v1",
        "refs/heads/agent/dev",
    }
    assert "rule own-branch-only" in problems["refs/heads/main"]
    assert "rule no-branch-deletion" in problems["refs/heads/agent/dev"]


def test_the_refusal_is_a_report_git_shows_with_the_rule() -> None:
    updates = [RefUpdate(OLD, NEW, "refs/heads/main"), RefUpdate(OLD, NEW, "refs/heads/agent/dev")]
    problems = check_updates(updates, "dev")

    plain = refusal_report(updates, problems, sideband=False)
    assert read_pkt_lines(plain)[0] == [
        b"unpack ok\n",
        b"ng refs/heads/main own-branch-only\n",
        b"ng refs/heads/agent/dev another update in this push was refused\n",
    ]
    banded = refusal_report(updates, problems, sideband=True)
    lines, _ = read_pkt_lines(banded)
    assert lines[0].startswith(b"\x02agentvisor: refusing to update refs/heads/main")
    assert lines[-1][:1] == b"\x01" and lines[-1][1:] == plain


def test_only_the_updates_git_made_to_the_agents_own_branch_are_recorded() -> None:
    from agentvisor.git.git_http import applied_updates

    noted = (
        f"{OLD} {NEW} refs/heads/agent/dev\n"
        f"{OLD} {NEW} refs/heads/main\n"
        "garbage line\n"
        f"{ZERO} {NEW} refs/heads/agent/dev\n"
    )
    assert applied_updates(noted, "dev") == [
        RefUpdate(OLD, NEW, "refs/heads/agent/dev"),
        RefUpdate(ZERO, NEW, "refs/heads/agent/dev"),
    ]
    assert applied_updates("", "dev") == []
