from __future__ import annotations

from supervisor.metrics import Metrics


def test_metrics_render_counters_histogram_and_gauges():
    metrics = Metrics()
    metrics.inc('deliveries|state="delivered"', 2)
    metrics.observe_delivery_latency(0.03)
    metrics.observe_delivery_latency(7.0)
    metrics.set_gauge("sandbox_restarts", "Restarts.", {'project="p",role="dev"': 3})
    text = metrics.render({"checkins_pending": ("Pending.", {"": 4})})
    assert 'agentvisor_deliveries_total{state="delivered"} 2' in text
    assert 'agentvisor_delivery_latency_seconds_bucket{le="0.05"} 1' in text
    assert 'agentvisor_delivery_latency_seconds_bucket{le="10.0"} 2' in text
    assert "agentvisor_delivery_latency_seconds_count 2" in text
    assert 'agentvisor_sandbox_restarts{project="p",role="dev"} 3' in text
    assert "agentvisor_checkins_pending 4" in text
