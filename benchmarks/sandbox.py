"""Sandboxes: latency from a check-in's due time to its verified arrival in the pane with 1, 10
and 30 sandboxes; container start to ready; memory of an idle sandbox. Real Docker, real tmux,
the demo agent; image `agentvisor/sandbox:test` (make image-test)."""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from agentvisor.config import Settings, load_settings
from agentvisor.git.worktrees import ensure_worktree
from agentvisor.sandbox.sandbox_tokens import write_token_file
from agentvisor.sandbox.sandbox_user import sandbox_owner
from agentvisor.sandbox.sandboxes import SandboxBackend, build_spec, gather_spec_inputs
from benchmarks.report import Result
from tests.conftest import ServerProcess
from tests.helpers import make_repo, wait_until

IMAGE = os.environ.get("AGENTVISOR_TEST_IMAGE", "agentvisor/sandbox:test")


class Fleet:
    """A server and N demo sandboxes of one project."""

    def __init__(self, base: Path, count: int) -> None:
        self.server = ServerProcess(base / "state", env={"AGENTVISOR_SHIM_HEARTBEAT_S": "1"})
        self.server.start()
        env = {"AGENTVISOR_DEMO_IMAGE": IMAGE}
        self.settings: Settings = load_settings(base / "state", env=env, memory_mb=256)
        self.backend = SandboxBackend(self.settings)
        self.project = f"bench{base.name[-5:].lower()}"
        self.repo = make_repo(base / "bench", "# Bench\n\nA repository to benchmark delivery in.\n")
        self.roles = [f"agent-{i}" for i in range(count)]
        self.server.client.post("/v1/projects", {"name": self.project, "path": str(self.repo)})

    def start(self) -> float:
        """Start every sandbox; seconds until every shim sent a heartbeat."""
        specs = []
        for role in self.roles:
            worktree = ensure_worktree(self.repo, role, "main", owner=sandbox_owner(self.settings))
            token = self.server.register_agent(self.project, role)
            token_file = write_token_file(self.settings, self.project, role, token)
            specs.append(
                build_spec(
                    gather_spec_inputs(
                        self.settings,
                        project=self.project,
                        role=role,
                        worktree=worktree.path,
                        repo_root=self.repo,
                        token_file=token_file,
                        profile="demo",
                        image=IMAGE,
                    )
                )
            )
        begin = time.time()
        self.backend.start_many(specs)
        started = {i.role: i.started_at for i in self.backend.list(self.project)}
        first_seen: dict[str, float] = {}

        def all_seen() -> bool:
            for agent in self.server.client.get("/v1/agents", project=self.project):
                seen = agent["last_seen_at"]
                if seen and seen >= begin and agent["role"] not in first_seen:
                    first_seen[agent["role"]] = seen
            return len(first_seen) == len(self.roles)

        wait_until(all_seen, timeout_s=120, interval_s=0.02, message="every heartbeat")
        # From the container's start (Docker's StartedAt) to its shim's first heartbeat.
        self.start_to_ready_s = max(first_seen[r] - (started[r] or begin) for r in self.roles)
        return time.time() - begin

    def checkin_latency_ms(self, per_agent: int = 5, burst: bool = False) -> list[float]:
        """Schedule check-ins for every agent; ms from due time to delivered (verified).

        By default the due times are spread at random over a window (one check-in per agent
        every 3 s on average, as a busy team's check-ins come); with `burst`, every agent's
        check-in falls due at the same instant, 0.5 s apart, the worst case."""
        due_ids = []
        start = time.time() + 1.0
        window_s = 3.0 * per_agent
        for i in range(per_agent):
            for role in self.roles:
                due_at = start + (i * 0.5 if burst else random.uniform(0, window_s))
                checkin = self.server.client.post(
                    "/v1/checkins",
                    {"project": self.project, "to": role, "note": f"bench {i}", "due_at": due_at},
                )
                due_ids.append(checkin["id"])
        wanted = set(due_ids)

        def delivered() -> list[dict] | None:
            rows = [
                m
                for m in self.server.client.get(
                    "/v1/messages", project=self.project, limit=500, state="delivered"
                )
                if m["checkin_id"] in wanted
            ]
            return rows if len(rows) == len(wanted) else None

        # Polled slowly: the delivery times are recorded by the server, and a benchmark that
        # keeps the server busy answering it would measure itself.
        rows = wait_until(delivered, timeout_s=180, interval_s=1.0, message="all check-ins")
        due = {
            c["id"]: c["due_at"]
            for c in self.server.client.get(
                "/v1/checkins", project=self.project, state="fired", limit=1000
            )
        }
        return sorted((m["delivered_at"] - due[m["checkin_id"]]) * 1000 for m in rows)

    def idle_memory_mb(self) -> float:
        """Memory of an idle sandbox without the agent CLI itself (the demo agent here): the
        cgroup's usage as `docker stats` shows it, less the agent process's resident set."""
        stats = self.backend.stats(self.project)
        values = []
        for (_, role), sample in list(stats.items())[:5]:
            if sample.memory_mb is None:
                continue
            ps = subprocess.run(
                ["docker", "exec", f"agentvisor-{self.project}-{role}", "ps", "-eo", "rss=,args="],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            agent_kb = sum(
                int(line.split(None, 1)[0])
                for line in ps.splitlines()
                if "agent_shim.demo_agent" in line
            )
            values.append(sample.memory_mb - agent_kb / 1024)
        return statistics.mean(values) if values else float("nan")

    def publish_latency_ms(self, commits: int = 20) -> list[float]:
        """An agent's commit (its time taken inside, right after `git commit`) to the commit
        on `agent/<role>` in the project, published by the shim through the git channel."""
        import docker

        from agentvisor.sandbox.sandbox_spec import container_name

        role = self.roles[0]
        container = docker.from_env().containers.get(container_name(self.project, role))
        ref = self.repo / ".git" / "refs" / "heads" / "agent" / role
        latencies = []
        for index in range(commits):
            code, output = container.exec_run(
                [
                    "sh",
                    "-c",
                    f"cd /workspace && git commit -q --allow-empty -m 'bench {index}' "
                    "&& git rev-parse HEAD && date +%s.%N",
                ]
            )
            assert code == 0, output
            commit, made_at = output.decode().split()
            seen = wait_until(
                lambda commit=commit: (
                    ref.is_file() and ref.read_text().strip() == commit and time.time()
                ),
                timeout_s=30,
                interval_s=0.002,
                message="the commit on the agent's branch in the project",
            )
            latencies.append((float(seen) - float(made_at)) * 1000)
            time.sleep(random.uniform(0.05, 0.4))  # commits come at any point of the poll
        return latencies

    def close(self) -> None:
        self.backend.remove(self.project, volumes=True)
        self.server.kill()


def _p99(values: list[float]) -> float:
    return values[max(0, int(len(values) * 0.99) - 1)]


def run() -> list[Result]:
    results: list[Result] = []
    starts = []
    for _ in range(3):  # one sandbox at a time; the median of three starts
        with tempfile.TemporaryDirectory(prefix="avb-", dir="/tmp") as tmp:
            fleet = Fleet(Path(tmp), 1)
            try:
                fleet.start()
                starts.append(fleet.start_to_ready_s)
            finally:
                fleet.close()
    ready_s = statistics.median(starts)
    results.append(
        Result(
            "container start to ready (shim's first heartbeat), median of 3",
            f"{ready_s * 1000:.0f} ms",
            "< 500 ms",
            ready_s < 0.5,
        )
    )
    for count in (1, 10, 30):
        with tempfile.TemporaryDirectory(prefix="avb-", dir="/tmp") as tmp:
            fleet = Fleet(Path(tmp), count)
            try:
                fleet.start()
                latencies = fleet.checkin_latency_ms()
                results.append(
                    Result(
                        f"due check-in to verified in pane, {count} sandboxes",
                        f"median {statistics.median(latencies):.0f} ms, "
                        f"p99 {_p99(latencies):.0f} ms",
                        "p99 < 100 ms" if count == 30 else "",
                        _p99(latencies) < 100 if count == 30 else None,
                    )
                )
                if count == 30:
                    burst = fleet.checkin_latency_ms(per_agent=3, burst=True)
                    results.append(
                        Result(
                            "same, all 30 due at the same instant (burst)",
                            f"median {statistics.median(burst):.0f} ms, p99 {_p99(burst):.0f} ms",
                            "",
                        )
                    )
                if count == 1:
                    published = sorted(fleet.publish_latency_ms())
                    p95 = published[max(0, int(len(published) * 0.95) - 1)]
                    results.append(
                        Result(
                            "agent's commit to visible on its branch in the project",
                            f"median {statistics.median(published):.0f} ms, p95 {p95:.0f} ms",
                            "p95 < 1000 ms",
                            p95 < 1000,
                        )
                    )
                if count == 10:
                    memory = fleet.idle_memory_mb()
                    results.append(
                        Result(
                            "memory of an idle sandbox, agent CLI excluded",
                            f"{memory:.0f} MB",
                            "< 40 MB",
                            memory < 40,
                        )
                    )
            finally:
                fleet.close()
    return results
