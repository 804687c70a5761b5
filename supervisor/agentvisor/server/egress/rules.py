"""What the egress proxy lets out: allowlist entries, presets, and the decision for one
destination. Pure: no sockets, no DNS (addresses come in already resolved).

An entry is `HOST`, `HOST:PORT`, `*.DOMAIN[:PORT]`, `[IPV6]:PORT` or a preset's name. Without a
port an entry allows 80 and 443. Addresses that are not public (loopback, private, link-local,
CGNAT, multicast, unspecified, the metadata address, ...) and IP literals are allowed only by an
entry naming that exact host and port: no wildcard, preset or port-less entry reaches them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_PORTS = (80, 443)
MAX_HOST_LEN = 253

# Named sets the operator opts into (`agentvisor egress allow PROJECT pypi`), documented in
# docs/guides/network.md.
PRESETS: dict[str, tuple[str, ...]] = {
    "pypi": ("pypi.org", "files.pythonhosted.org"),
    "npm": ("registry.npmjs.org",),
    "debian": ("deb.debian.org", "security.debian.org"),
    "github": (
        "github.com",
        "api.github.com",
        "codeload.github.com",
        "objects.githubusercontent.com",
        "raw.githubusercontent.com",
    ),
    "crates": ("crates.io", "index.crates.io", "static.crates.io"),
    "go": ("proxy.golang.org", "sum.golang.org"),
}

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_ENTRY = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::(?P<port>[0-9]{1,5}))?")


class RuleError(ValueError):
    """An allowlist entry that cannot be read; the message says what a good one looks like."""


@dataclass(frozen=True)
class Rule:
    """One host (or `*.domain`) and its ports; `exact` when it names one host and one port,
    the only kind that reaches a non-public address or an IP literal."""

    host: str  # normalised: lower case, no trailing dot, IPv6 without brackets
    port: int | None  # None: DEFAULT_PORTS
    wildcard: bool = False
    source: str = ""  # the entry it came from: "pypi", "example.com:8080", ...

    @property
    def exact(self) -> bool:
        return not self.wildcard and self.port is not None and not self.from_preset

    @property
    def from_preset(self) -> bool:
        return self.source in PRESETS

    def matches(self, host: str, port: int) -> bool:
        if port not in ((self.port,) if self.port is not None else DEFAULT_PORTS):
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # allowed | not-listed | ip-literal | non-public-address | bad-host | ...
    rule: str = ""  # the entry that allowed it


def normalise_host(raw: str) -> str:
    """Lower case, no trailing dot, IPv6 without brackets; RuleError for anything that is not
    a DNS name or an IP address."""
    host = raw.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ip(host) or ":" not in host:
            raise RuleError(f"{raw!r} is not an IPv6 address in brackets")
        return str(ipaddress.ip_address(host))
    host = host.removesuffix(".")
    if _is_ip(host):
        return str(ipaddress.ip_address(host))
    if not host or len(host) > MAX_HOST_LEN or not _NAME.fullmatch(host):
        raise RuleError(f"{raw!r} is not a host name (letters, digits, '-' and '.')")
    return host


def parse_entry(entry: str) -> list[Rule]:
    """The rules of one allowlist entry (a preset gives several)."""
    text = entry.strip()
    if text.lower() in PRESETS:
        name = text.lower()
        return [Rule(host, None, source=name) for host in PRESETS[name]]
    match = _ENTRY.fullmatch(text)
    if not match:
        raise RuleError(
            f"{entry!r} is not an allowlist entry: use HOST, HOST:PORT, *.DOMAIN, [IPV6]:PORT "
            f"or a preset ({', '.join(sorted(PRESETS))})"
        )
    raw_host, raw_port = match["host"], match["port"]
    port = None
    if raw_port is not None:
        port = int(raw_port)
        if not 1 <= port <= 65535:
            raise RuleError(f"{entry!r}: the port must be from 1 to 65535")
    wildcard = raw_host.startswith("*.")
    host = normalise_host(raw_host[2:] if wildcard else raw_host)
    if wildcard and _is_ip(host):
        raise RuleError(f"{entry!r}: a wildcard needs a domain, not an address")
    if _is_ip(host) and ":" in host and not raw_host.startswith("["):
        raise RuleError(f"{entry!r}: write an IPv6 address in brackets, [ADDRESS]:PORT")
    canonical = f"{'*.' if wildcard else ''}{_display(host)}{'' if port is None else f':{port}'}"
    return [Rule(host, port, wildcard, canonical)]


def parse_entries(entries: Iterable[str]) -> list[Rule]:
    rules: list[Rule] = []
    for entry in entries:
        rules += parse_entry(entry)
    return rules


def canonical_entry(entry: str) -> str:
    """How an entry is stored and shown: `Example.COM.:443` is `example.com:443`."""
    rules = parse_entry(entry)
    return rules[0].source


def is_public(address: str) -> bool:
    """Whether `address` is a public unicast address (not loopback, private, link-local,
    CGNAT, multicast, unspecified, reserved, documentation, the metadata address, nor an
    IPv4 address of those kinds mapped or embedded into IPv6)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not is_public(str(embedded)):
            return False
    return bool(ip.is_global) and not ip.is_multicast


def decide_name(host: str, port: int, rules: Sequence[Rule]) -> tuple[Decision, Rule | None]:
    """The decision before any DNS: a name nobody listed is never resolved."""
    if not 1 <= port <= 65535:
        return Decision(False, "bad-port"), None
    if _is_ip(host):
        for rule in rules:
            if rule.exact and rule.matches(host, port):
                return Decision(True, "allowed", rule.source), rule
        return Decision(False, "ip-literal"), None
    for rule in rules:
        if rule.matches(host, port):
            return Decision(True, "allowed", rule.source), rule
    return Decision(False, "not-listed"), None


def decide_addresses(
    host: str, port: int, rule: Rule, addresses: Sequence[str]
) -> tuple[Decision, list[str]]:
    """After resolution: the addresses the proxy may connect to (and nothing else: it connects
    to one of these, never resolving again)."""
    if not addresses:
        return Decision(False, "unresolvable", rule.source), []
    exact = rule.exact and rule.matches(host, port)
    if not exact and not all(is_public(a) for a in addresses):
        # One non-public answer is enough to refuse: a name that points at the host's own
        # services is what this rule exists for.
        return Decision(False, "non-public-address", rule.source), []
    return Decision(True, "allowed", rule.source), list(addresses)


def allow_command(project: str, host: str, port: int) -> str:
    """The command that would allow this destination, for the 403's body."""
    target = f"{_display(host)}:{port}"
    return f"agentvisor egress allow {project} {target}"


def _display(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def split_authority(text: str, default_port: int | None = None) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) as a CONNECT target or a URL's netloc says it; the host
    normalised. RuleError when it is neither."""
    match = _ENTRY.fullmatch(text)
    if not match or (match["port"] is None and default_port is None):
        raise RuleError(f"{text[:200]!r} is not HOST:PORT")
    port = int(match["port"]) if match["port"] is not None else default_port
    assert port is not None
    host = normalise_host(match["host"])
    if ":" in host and not match["host"].startswith("["):
        raise RuleError(f"{text[:200]!r}: an IPv6 address goes in brackets")
    return host, port
