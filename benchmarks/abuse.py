"""Fair service under abuse: one agent of project A opens as many idle connections to the API
socket as its sandbox's descriptor limit allows (20,000 by default) and floods requests as fast
as it can, while project B's check-ins are delivered into B's pane and the operator's
`agentvisor status` answers. Real Docker, real tmux, the demo agent (docs/limits.md)."""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentvisor.config import Settings, load_settings
from agentvisor.git.worktrees import ensure_worktree
from agentvisor.sandbox.sandbox_spec import container_name
from agentvisor.sandbox.sandbox_tokens import write_token_file
from agentvisor.sandbox.sandbox_user import sandbox_owner
from agentvisor.sandbox.sandboxes import SandboxBackend, build_spec, gather_spec_inputs
from benchmarks.report import Result
from tests.conftest import REPO, ServerProcess
from tests.helpers import make_repo, wait_until

IMAGE = os.environ.get("AGENTVISOR_TEST_IMAGE", "agentvisor/sandbox:test")
INSIDE = (Path(__file__).parent / "abuse_inside.py").read_text(encoding="utf-8")


@dataclass
class Figures:
    attacker: dict
    latencies_ms: list[float]
    status_ms: list[float]
    status_failures: int
    rss_mb: tuple[float, float, float]  # before, peak during, after
    fds_peak: int
    log_growth_bytes: int
    notes: list[str] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99_ms(self) -> float:
        values = sorted(self.latencies_ms)
        return values[max(0, int(len(values) * 0.99) - 1)]

    def lines(self) -> list[str]:
        a = self.attacker
        return [
            f"attacker (project A): fd limit {a['fd_limit']}, {a['opened']} connections "
            f"opened, at most {a['most_held']} held at once, {a['rounds']} rounds, "
            f"{a['requests']} requests answered {a['answers']}, connect errors "
            f"{a['connect_errors']}",
            f"project B: {len(self.latencies_ms)} check-ins, due -> verified in pane "
            f"p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, "
            f"max {max(self.latencies_ms):.0f} ms",
            f"operator: agentvisor status {len(self.status_ms)} times, "
            f"{self.status_failures} failed, slowest {max(self.status_ms, default=0):.0f} ms",
            f"server: RSS {self.rss_mb[0]:.0f} MiB before, {self.rss_mb[1]:.0f} peak, "
            f"{self.rss_mb[2]:.0f} after; at most {self.fds_peak} descriptors; "
            f"log grew {self.log_growth_bytes} bytes",
        ]


def _proc_figures(pid: int) -> tuple[float, int]:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Arena:
    """One server, project A with the attacker's sandbox, project B with a demo agent."""

    def __init__(self, base: Path, env: dict[str, str] | None = None) -> None:
        self.base = base
        self.server = ServerProcess(
            base / "state", env={"AGENTVISOR_SHIM_HEARTBEAT_S": "1", **(env or {})}
        )
        self.server.start()
        self.settings: Settings = load_settings(
            base / "state", env={"AGENTVISOR_DEMO_IMAGE": IMAGE}, memory_mb=512
        )
        self.backend = SandboxBackend(self.settings)
        suffix = base.name[-5:].lower().replace("_", "x")
        self.a, self.b = f"abusea{suffix}", f"abuseb{suffix}"
        specs = []
        for project, role in ((self.a, "attacker"), (self.b, "agent")):
            repo = make_repo(base / project, "# Abuse\n\nA repository for the fairness test.\n")
            self.server.client.post("/v1/projects", {"name": project, "path": str(repo)})
            worktree = ensure_worktree(repo, role, "main", owner=sandbox_owner(self.settings))
            token = self.server.register_agent(project, role)
            specs.append(
                build_spec(
                    gather_spec_inputs(
                        self.settings,
                        project=project,
                        role=role,
                        worktree=worktree.path,
                        repo_root=repo,
                        token_file=write_token_file(self.settings, project, role, token),
                        profile="demo",
                        image=IMAGE,
                    )
                )
            )
        begin = time.time()
        self.backend.start_many(specs)

        def both_seen() -> bool:
            agents = self.server.client.get("/v1/agents")
            return len([a for a in agents if (a["last_seen_at"] or 0) >= begin]) == 2

        wait_until(both_seen, timeout_s=120, interval_s=0.1, message="both heartbeats")

    def close(self) -> None:
        for project in (self.a, self.b):
            self.backend.remove(project, volumes=True)
        self.server.kill()

    def status_once(self) -> tuple[float, bool]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVISOR_")}
        env["PYTHONPATH"] = str(REPO)
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "agentvisor",
                "--state",
                str(self.settings.state_dir),
                "status",
                self.b,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        return (time.monotonic() - started) * 1000, done.returncode == 0 and "agent" in done.stdout

    def measure(
        self,
        seconds: float = 30.0,
        connections: int = 20_000,
        flooders: int = 8,
        checkins: int = 100,
        kinds: str = "cmi",
        status_every_s: float = 1.0,
    ) -> Figures:
        assert self.server.proc is not None
        pid = self.server.proc.pid
        log = self.server.state_dir / "test-server.log"
        log_before = log.stat().st_size
        rss_before, _ = _proc_figures(pid)
        start = time.time() + 3.0
        ids = set()
        for i in range(checkins):
            due_at = start + random.uniform(0, seconds - 6.0)
            checkin = self.server.client.post(
                "/v1/checkins",
                {"project": self.b, "to": "agent", "note": f"fair {i}", "due_at": due_at},
            )
            ids.add(checkin["id"])
        attack = subprocess.Popen(
            [
                "docker",
                "exec",
                "-i",
                container_name(self.a, "attacker"),
                "python3",
                "-",
                str(seconds),
                str(connections),
                str(flooders),
                kinds,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert attack.stdin is not None
        attack.stdin.write(INSIDE)
        attack.stdin.close()
        attack.stdin = None  # written and closed: communicate() must not flush it
        peak = [rss_before, 0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.25):
                try:
                    rss, fds = _proc_figures(pid)
                except OSError:
                    return
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], fds)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        status_ms, failures = [], 0
        time.sleep(2.0)  # the flood is on
        # The operator's CLI, as often as asked (each start costs ~1.5 s of CPU here: the
        # same in the measure without the attack, or the two would not compare).
        while attack.poll() is None or time.time() < start + seconds - 6.0:
            if status_every_s > 0:
                took, ok = self.status_once()
                status_ms.append(took)
                failures += not ok
            time.sleep(max(status_every_s, 0.2))
        stop.set()
        out, err = attack.communicate(timeout=60)
        try:
            attacker = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise AssertionError(f"the attacker printed nothing: {err[-2000:]}") from None

        def delivered() -> list[dict] | None:
            rows = [
                m
                for m in self.server.client.get(
                    "/v1/messages", project=self.b, limit=500, state="delivered"
                )
                if m["checkin_id"] in ids
            ]
            return rows if len(rows) == len(ids) else None

        rows = wait_until(delivered, timeout_s=120, interval_s=1.0, message="B's check-ins")
        due = {
            c["id"]: c["due_at"]
            for c in self.server.client.get(
                "/v1/checkins", project=self.b, state="fired", limit=500
            )
        }
        self.timeline = sorted(
            (due[m["checkin_id"]] - start, (m["delivered_at"] - due[m["checkin_id"]]) * 1000)
            for m in rows
        )
        latencies = sorted(latency for _, latency in self.timeline)
        rss_after, _ = _proc_figures(pid)
        return Figures(
            attacker=attacker,
            latencies_ms=latencies,
            status_ms=status_ms,
            status_failures=failures,
            rss_mb=(rss_before, peak[0], rss_after),
            fds_peak=peak[1],
            log_growth_bytes=log.stat().st_size - log_before,
        )


def run() -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="avb-", dir="/tmp") as tmp:
        arena = Arena(Path(tmp))
        try:
            quiet = arena.measure(seconds=15.0, connections=0, flooders=0, checkins=40)
            figures = arena.measure()
        finally:
            arena.close()
    a = figures.attacker
    tried = a["opened"] + sum(a["connect_errors"].values())
    return [
        Result(
            "check-in to verified in pane, project B, no attack (the machine's own figure)",
            f"median {quiet.p50_ms:.0f} ms, p99 {quiet.p99_ms:.0f} ms",
            "",
        ),
        Result(
            f"same while an agent of project A tries {tried} connects"
            f" ({a['most_held']} held) and floods ({a['requests']} answered)",
            f"median {figures.p50_ms:.0f} ms, p99 {figures.p99_ms:.0f} ms",
            "p99 < 100 ms",
            figures.p99_ms < 100,
        ),
        Result(
            "operator's `agentvisor status` during that flood",
            f"{len(figures.status_ms) - figures.status_failures}/{len(figures.status_ms)} "
            f"answered, slowest {max(figures.status_ms, default=0):.0f} ms",
            "all answer",
            figures.status_failures == 0 and bool(figures.status_ms),
        ),
        Result(
            "server during that flood: RSS before / peak / after, descriptors",
            f"{figures.rss_mb[0]:.0f} / {figures.rss_mb[1]:.0f} / {figures.rss_mb[2]:.0f} MiB, "
            f"{figures.fds_peak} fds",
            "",
        ),
    ]
