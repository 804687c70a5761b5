"""Load: 20 demo sandboxes, real server, real Docker and tmux (`agentvisor.drills.load`, the
engine of `agentvisor load`): verified deliveries/s as fast as 8 clients can send, end-to-end
p99 at 100 messages/s offered, and the idle server's CPU per sandbox. Image
`agentvisor/sandbox:test` (make image-test)."""

from __future__ import annotations

import os
import sys

from agentvisor.drills.load import LoadOptions, LoadReport, run_load
from benchmarks.report import Result

IMAGE = os.environ.get("AGENTVISOR_TEST_IMAGE", "agentvisor/sandbox:test")
SANDBOXES = 20


def _run(options: LoadOptions) -> LoadReport:
    return run_load(options, IMAGE, lambda line: print(f"  load: {line}", file=sys.stderr))


def _losses(report: LoadReport) -> str:
    t = report.tally
    return f"{t.lost} lost, {t.doubled} doubled, {t.wrong_pane} in the wrong pane"


def run() -> list[Result]:
    results: list[Result] = []
    flat_out = _run(LoadOptions(SANDBOXES, messages=2000, rate=0, clients=8, idle_s=20))
    per_s = flat_out.delivered_per_s or 0.0
    results.append(
        Result(
            f"verified deliveries/s, {SANDBOXES} sandboxes, 2,000 messages from 8 clients",
            f"{per_s:.0f}/s (accepted {flat_out.accepted_per_s:.0f}/s; {_losses(flat_out)})",
            ">= 250/s, nothing lost",
            per_s >= 250 and flat_out.ok,
        )
    )
    paced = _run(LoadOptions(SANDBOXES, messages=3000, rate=100, clients=8, idle_s=0))
    p99 = paced.tally.latency(99)
    results.append(
        Result(
            f"end-to-end p99 at 100 messages/s offered, {SANDBOXES} sandboxes",
            "-"
            if p99 is None
            else f"p99 {p99 * 1000:.0f} ms, p50 "
            f"{(paced.tally.latency(50) or 0) * 1000:.0f} ms ({_losses(paced)})",
            "< 1 s, nothing lost",
            p99 is not None and p99 < 1.0 and paced.ok,
        )
    )
    idle = flat_out.cpu_idle_per_sandbox_pct
    results.append(
        Result(
            f"idle server CPU per sandbox, {SANDBOXES} sandboxes",
            "-"
            if idle is None
            else f"{idle:.3f} % of a core ({flat_out.cpu_idle_pct:.2f} % in all, "
            f"{flat_out.cpu_baseline_pct or 0:.2f} % with none)",
            "< 0.05 %",
            idle is not None and idle < 0.05,
        )
    )
    return results
