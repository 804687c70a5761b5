"""Prometheus metrics in the text exposition format: in-process counters and a latency
histogram, plus gauges read from the store when scraped."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self._bucket_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._latency_sum = 0.0
        self._latency_count = 0
        self.gauges: dict[str, tuple[str, dict[str, float]]] = {}  # set by background threads

    def inc(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def set_gauge(self, name: str, help_text: str, values: dict[str, float]) -> None:
        with self._lock:
            self.gauges[name] = (help_text, dict(values))

    def observe_delivery_latency(self, seconds: float) -> None:
        with self._lock:
            self._bucket_counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
            self._latency_sum += seconds
            self._latency_count += 1

    def render(self, gauges: dict[str, tuple[str, dict[str, float]]]) -> str:
        """`gauges`: metric name -> (help, {label-string: value}); label-string like 'state="x"'."""
        lines: list[str] = []
        with self._lock:
            lines += [
                "# HELP agentvisor_delivery_latency_seconds Time from a message being due "
                "to its verified arrival in the pane.",
                "# TYPE agentvisor_delivery_latency_seconds histogram",
            ]
            cumulative = 0
            for bound, count in zip(LATENCY_BUCKETS_S, self._bucket_counts, strict=False):
                cumulative += count
                lines.append(
                    f'agentvisor_delivery_latency_seconds_bucket{{le="{bound}"}} {cumulative}'
                )
            cumulative += self._bucket_counts[-1]
            lines.append(f'agentvisor_delivery_latency_seconds_bucket{{le="+Inf"}} {cumulative}')
            lines.append(f"agentvisor_delivery_latency_seconds_sum {self._latency_sum:.6f}")
            lines.append(f"agentvisor_delivery_latency_seconds_count {self._latency_count}")
            for name, value in sorted(self.counters.items()):
                metric, _, labels = name.partition("|")
                lines.append(f"# TYPE agentvisor_{metric}_total counter")
                label_text = f"{{{labels}}}" if labels else ""
                lines.append(f"agentvisor_{metric}_total{label_text} {value}")
        with self._lock:
            gauges = {**self.gauges, **gauges}
        for name, (help_text, values) in sorted(gauges.items()):
            lines.append(f"# HELP agentvisor_{name} {help_text}")
            lines.append(f"# TYPE agentvisor_{name} gauge")
            for labels, reading in sorted(values.items()):
                label_text = f"{{{labels}}}" if labels else ""
                lines.append(f"agentvisor_{name}{label_text} {reading}")
        return "\n".join(lines) + "\n"
