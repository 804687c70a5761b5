"""A project's egress allowlist in a real SQLite store: the operator's entries, config.toml's,
and the requests the proxy recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentvisor.config import Settings
from agentvisor.errors import InvalidInput, NotFound
from agentvisor.server.egress import allowlist
from agentvisor.store.database import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db.sqlite")


@pytest.fixture
def project(store: Store) -> int:
    return int(store.upsert_project("shop")["id"])


def test_entries_are_stored_once_in_one_form_and_removed(store: Store, project: int):
    settings = Settings(egress_allow=("pypi",))
    allowlist.allow(store, project, "Example.COM.:8080")
    allowlist.allow(store, project, "example.com:8080", origin="up")  # the same entry
    assert allowlist.listing(settings, store, project) == [
        {"entry": "pypi", "origin": "config.toml"},
        {"entry": "example.com:8080", "origin": "operator"},
    ]
    hosts = {r.host for r in allowlist.rules_for(settings, store, project)}
    assert hosts == {"pypi.org", "files.pythonhosted.org", "example.com"}
    allowlist.deny(settings, store, project, "example.com:8080")
    assert [r["entry"] for r in allowlist.listing(settings, store, project)] == ["pypi"]
    kinds = [e["kind"] for e in store.list_events(project) if e["kind"].startswith("egress.")]
    assert kinds == ["egress.rule_removed", "egress.rule_added"]


def test_a_bad_entry_or_one_that_is_not_there_is_refused_saying_why(store: Store, project: int):
    settings = Settings(egress_allow=("pypi",))
    with pytest.raises(InvalidInput, match="not an allowlist entry"):
        allowlist.allow(store, project, "http://example.com/")
    with pytest.raises(NotFound, match="not on this project's allowlist"):
        allowlist.deny(settings, store, project, "example.com")
    with pytest.raises(InvalidInput, match=r"config\.toml"):
        allowlist.deny(settings, store, project, "pypi")
    with pytest.raises(InvalidInput, match="egress_allow"):
        allowlist.rules_for(Settings(egress_allow=("a b",)), store, project)


def test_requests_are_the_proxys_events_newest_first_and_filtered(store: Store, project: int):
    for allowed in (True, False, True):
        store.log_event(allowlist.EVENT_KIND, project, None, {"allowed": allowed})
    store.log_event("git.push_refused", project, None, {"allowed": False})
    rows = allowlist.requests(store, project)
    assert [r["data"]["allowed"] for r in rows] == [True, False, True]
    assert [r["data"]["allowed"] for r in allowlist.requests(store, project, True)] == [False]
    assert allowlist.requests(store, project + 1) == []
