"""Prometheus metrics for `/metrics`, written by `prometheus_client` so that every label value
is escaped as the exposition format demands: in-process counters and the delivery latency
histogram (`Metrics`), and gauges read from the store at each scrape (`StoreCollector`).

Metric and label *names* are chosen by the code and checked here; label *values* may be any
string, agent-chosen ones included (a heartbeat's `state`), and the library escapes them.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agentvisor.store.database import Store

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
PREFIX = "agentvisor_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# The older `name|key="value",...` form of a counter's name; values in it are code-chosen.
_LEGACY_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"\s*(?:,|$)')

Labels = tuple[tuple[str, str], ...]


def _checked_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a Prometheus name: {name!r}")
    return name


def _labels(labels: Mapping[str, object] | None) -> Labels:
    return tuple((_checked_name(key), str(value)) for key, value in (labels or {}).items())


def _split_legacy(name: str) -> tuple[str, dict[str, str]]:
    """`'deliveries|state="delivered"'` -> ('deliveries', {'state': 'delivered'})."""
    metric, _, text = name.partition("|")
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        found = _LEGACY_LABEL.match(text, position)
        if found is None:
            raise ValueError(f"labels of counter {metric!r} not understood: {text!r}")
        labels[found.group(1)] = found.group(2)
        position = found.end()
    return metric, labels


class Metrics:
    """The server's own counters, gauges set by its threads and the latency histogram; a
    `prometheus_client` collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, Labels], float] = {}
        self._bucket_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._latency_sum = 0.0
        self.gauges: dict[str, tuple[str, list[tuple[Labels, float]]]] = {}

    def inc(self, name: str, amount: float = 1, labels: Mapping[str, object] | None = None) -> None:
        """Add `amount` to the counter `agentvisor_<name>_total{labels}`. (`name` may still
        carry its labels as `name|key="value"`, the older form.)"""
        if "|" in name:
            name, legacy = _split_legacy(name)
            labels = {**legacy, **(labels or {})}
        key = (_checked_name(name), _labels(labels))
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + amount

    def set_gauge(
        self, name: str, help_text: str, samples: Iterable[tuple[Mapping[str, object], float]]
    ) -> None:
        """Replace the gauge `agentvisor_<name>` by `samples`: (labels, value) pairs."""
        values = [(_labels(labels), float(value)) for labels, value in samples]
        with self._lock:
            self.gauges[_checked_name(name)] = (help_text, values)

    def observe_delivery_latency(self, seconds: float) -> None:
        with self._lock:
            self._bucket_counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
            self._latency_sum += seconds

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counters = dict(self.counters)
            gauges = dict(self.gauges)
            buckets, total = list(self._bucket_counts), self._latency_sum
        cumulative, rows = 0, []
        for bound, amount in zip((*map(str, LATENCY_BUCKETS_S), "+Inf"), buckets, strict=True):
            cumulative += amount
            rows.append((bound, float(cumulative)))
        yield HistogramMetricFamily(
            f"{PREFIX}delivery_latency_seconds",
            "Time from a message being due to its verified arrival in the pane.",
            buckets=rows,
            sum_value=total,
        )
        by_name: dict[str, list[tuple[Labels, float]]] = {}
        for (name, labels), value in sorted(counters.items()):
            by_name.setdefault(name, []).append((labels, value))
        for name, samples in by_name.items():
            family = Metric(f"{PREFIX}{name}", f"agentvisor counter: {name}.", "counter")
            for labels, value in samples:
                family.add_sample(f"{PREFIX}{name}_total", dict(labels), value)
            yield family
        for name, (help_text, values) in sorted(gauges.items()):
            yield _gauge(name, help_text, values)

    def render(self, *collectors: Collector) -> str:
        """The exposition text of these metrics and of `collectors` (e.g. `StoreCollector`)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        for collector in collectors:
            registry.register(collector)
        return generate_latest(registry).decode("utf-8")


def _gauge(name: str, help_text: str, values: Iterable[tuple[Labels, float]]) -> Metric:
    family = Metric(f"{PREFIX}{name}", help_text, "gauge")
    for labels, value in values:
        family.add_sample(f"{PREFIX}{name}", dict(labels), value)
    return family


class StoreCollector:
    """Gauges read from the store at each scrape: messages by delivery state, pending
    check-ins, agents by state (the state an agent's heartbeat reports: any text)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        messages = GaugeMetricFamily(
            f"{PREFIX}messages", "Messages by delivery state.", labels=["state"]
        )
        for state, count in sorted(self.store.count_messages_by_state().items()):
            messages.add_metric([str(state)], count)
        yield messages
        yield GaugeMetricFamily(
            f"{PREFIX}checkins_pending",
            "Check-ins waiting to fire.",
            value=self.store.count_pending_checkins(),
        )
        agents: dict[str, int] = {}
        for agent in self.store.list_agents():
            state = str(agent.get("state") or "unknown")
            agents[state] = agents.get(state, 0) + 1
        family = GaugeMetricFamily(f"{PREFIX}agents", "Agents by state.", labels=["state"])
        for state, count in sorted(agents.items()):
            family.add_metric([state], count)
        yield family
