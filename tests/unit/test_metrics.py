from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentvisor.server.metrics import Metrics, StoreCollector
from agentvisor.store.database import Store


def test_metrics_render_counters_histogram_and_gauges():
    metrics = Metrics()
    metrics.inc("deliveries", 2, labels={"state": "delivered"})
    metrics.inc('deliveries|state="failed"')  # the older form still counts
    metrics.observe_delivery_latency(0.03)
    metrics.observe_delivery_latency(7.0)
    metrics.set_gauge("sandbox_restarts", "Restarts.", [({"project": "p", "role": "dev"}, 3)])
    text = metrics.render()
    assert 'agentvisor_deliveries_total{state="delivered"} 2.0' in text
    assert 'agentvisor_deliveries_total{state="failed"} 1.0' in text
    assert "# TYPE agentvisor_deliveries_total counter" in text
    assert 'agentvisor_delivery_latency_seconds_bucket{le="0.05"} 1.0' in text
    assert 'agentvisor_delivery_latency_seconds_bucket{le="10.0"} 2.0' in text
    assert 'agentvisor_delivery_latency_seconds_bucket{le="+Inf"} 2.0' in text
    assert "agentvisor_delivery_latency_seconds_count 2.0" in text
    assert 'agentvisor_sandbox_restarts{project="p",role="dev"} 3.0' in text


HOSTILE = [
    '"} 1\nagentvisor_injected 42',
    'x\\"} 1\n# TYPE agentvisor_injected gauge\nagentvisor_injected 42\n',
    "back\\slash\r\n\x00\x1b]52;c;AA==\x07",
    "\u2028line separator\u0085next line",
]


@pytest.mark.parametrize("state", HOSTILE)
def test_hostile_label_values_are_kept_exact_and_escaped(tmp_path: Path, state: str):
    store = Store(tmp_path / "agentvisor.db")
    project = store.upsert_project("p", "")
    agent, _ = store.register_agent(project["id"], "developer")
    store.touch_agent(agent["id"], state=state)
    text = Metrics().render(StoreCollector(store))
    assert "agentvisor_injected" not in [line.split(" ")[0] for line in text.splitlines()]
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "agentvisor_injected" not in families
    (sample,) = families["agentvisor_agents"].samples
    assert sample.labels == {"state": state}  # the exact value, unharmed
    assert sample.value == 1


def test_a_label_or_metric_name_that_is_not_a_name_is_refused():
    metrics = Metrics()
    with pytest.raises(ValueError):
        metrics.inc("x", labels={'a"} 1\nevil': "v"})
    with pytest.raises(ValueError):
        metrics.inc("evil 1\nx")
    with pytest.raises(ValueError):
        metrics.inc('x|state="a" 1\nevil 2')
