"""The egress allowlist's rules, pure: entries, presets, and decisions before and after DNS."""

from __future__ import annotations

import pytest

from agentvisor.server.egress.rules import (
    PRESETS,
    RuleError,
    allow_command,
    canonical_entry,
    decide_addresses,
    decide_name,
    is_public,
    parse_entries,
    split_authority,
)

PUBLIC = "93.184.215.14"  # never contacted: decisions are pure


def decide(entries: list[str], host: str, port: int, addresses: list[str] | None = None):
    rules = parse_entries(entries)
    decision, rule = decide_name(host, port, rules)
    if not decision.allowed or addresses is None:
        return decision.reason
    assert rule is not None
    return decide_addresses(host, port, rule, addresses)[0].reason


def test_nothing_is_allowed_by_default():
    assert decide([], "pypi.org", 443, [PUBLIC]) == "not-listed"


def test_a_host_without_port_allows_80_and_443_only():
    assert decide(["example.com"], "example.com", 443, [PUBLIC]) == "allowed"
    assert decide(["example.com"], "example.com", 80, [PUBLIC]) == "allowed"
    assert decide(["example.com"], "example.com", 22, [PUBLIC]) == "not-listed"
    assert decide(["example.com:8443"], "example.com", 8443, [PUBLIC]) == "allowed"
    assert decide(["example.com:8443"], "example.com", 443) == "not-listed"


def test_a_wildcard_covers_subdomains_not_the_domain_nor_lookalikes():
    entries = ["*.example.com"]
    assert decide(entries, "a.b.example.com", 443, [PUBLIC]) == "allowed"
    assert decide(entries, "example.com", 443) == "not-listed"
    assert decide(entries, "badexample.com", 443) == "not-listed"
    assert decide(entries, "example.com.evil.net", 443) == "not-listed"


def test_presets_expand_to_their_hosts():
    assert decide(["pypi"], "files.pythonhosted.org", 443, [PUBLIC]) == "allowed"
    assert decide(["github"], "github.com", 443, [PUBLIC]) == "allowed"
    assert all(PRESETS.values())


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.1", "::1", PUBLIC, "169.254.169.254"])
def test_ip_literals_are_denied_unless_listed_exactly_with_the_port(host):
    assert decide([], host, 80) == "ip-literal"
    listed = f"[{host}]" if ":" in host else host
    assert decide([listed], host, 80) == "ip-literal"  # no port: not exact
    assert decide([f"{listed}:80"], host, 80, [host]) == "allowed"
    assert decide([f"{listed}:80"], host, 81) == "ip-literal"


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
     "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1",
     "::", "ff02::1", "2002:7f00:1::1"],
)  # fmt: skip
def test_a_listed_name_that_resolves_to_a_non_public_address_is_denied(address):
    assert not is_public(address)
    assert decide(["internal.example"], "internal.example", 443, [address]) == "non-public-address"
    assert decide(["*.example"], "a.example", 443, [PUBLIC, address]) == "non-public-address"
    assert decide(["internal.example:443"], "internal.example", 443, [address]) == "allowed"


def test_public_addresses_are_public():
    assert is_public(PUBLIC) and is_public("2606:4700::1111")


def test_a_listed_name_that_does_not_resolve_is_unresolvable():
    assert decide(["denied.invalid"], "denied.invalid", 443, []) == "unresolvable"


def test_the_allowed_addresses_are_the_checked_ones():
    rules = parse_entries(["example.com"])
    _, rule = decide_name("example.com", 443, rules)
    assert rule is not None
    decision, addresses = decide_addresses("example.com", 443, rule, [PUBLIC])
    assert decision.allowed and addresses == [PUBLIC]


@pytest.mark.parametrize(
    "entry",
    ["", "exa mple.com", "a_b.com", "example.com:0", "example.com:70000", "*.1.2.3.4",
     "::1", "[nothost]:80", "http://example.com", "a..b", "-a.com", "x" * 300],
)  # fmt: skip
def test_bad_entries_are_refused_with_the_forms_that_work(entry):
    with pytest.raises(RuleError):
        parse_entries([entry])


def test_entries_are_stored_in_one_form():
    assert canonical_entry(" Example.COM.:443 ") == "example.com:443"
    assert canonical_entry("[0:0::1]:80") == "[::1]:80"
    assert canonical_entry("*.Example.com") == "*.example.com"
    assert canonical_entry("PyPI") == "pypi"


def test_split_authority_reads_connect_targets():
    assert split_authority("Example.com:443") == ("example.com", 443)
    assert split_authority("[::1]:8080") == ("::1", 8080)
    assert split_authority("example.com", 80) == ("example.com", 80)
    for bad in ("example.com", "::1:80", "a b:1", "x:y"):
        with pytest.raises(RuleError):
            split_authority(bad)


def test_the_allow_command_names_project_host_and_port():
    assert (
        allow_command("shop", "example.com", 8080)
        == "agentvisor egress allow shop example.com:8080"
    )
    assert allow_command("shop", "::1", 80) == "agentvisor egress allow shop [::1]:80"
