"""`agentvisor chaos` and `agentvisor load` as a user runs them: real server, real sandboxes, real
kills; exactly-once from both witnesses, and nothing of the throwaway team left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from tests.conftest import REPO, require
from tests.helpers import docker_answers, sandbox_test_image, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _drill(*args: str, timeout_s: float = 400) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVISOR_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "agentvisor", *args, "--image", sandbox_test_image(), "--json"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd="/",
    )


def _state_dir(stderr: str) -> Path:
    found = re.search(r"throwaway server in (\S+)", stderr)
    assert found, stderr
    return Path(found[1])


def assert_nothing_left(state_dir: Path) -> None:
    engine = docker.from_env()
    label = {"label": f"agentvisor.state_dir={state_dir}"}
    assert engine.containers.list(all=True, filters=label) == []
    assert engine.volumes.list(filters=label) == []
    assert not state_dir.parent.exists()


@pytest.fixture(autouse=True)
def _engine() -> None:
    require(docker_answers(), "a Docker engine")


def test_chaos_killing_server_shims_containers_and_clis_loses_doubles_and_misdelivers_nothing():
    done = _drill("chaos", "--duration", "60", "--kills", "5", "--seed", "20240601",
                  "--sandboxes", "2", "--rate", "3", "--drain-timeout", "90")  # fmt: skip
    assert done.stdout.strip(), done.stderr
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr + done.stdout
    assert set(report["kills"]) == {"server", "shim", "container", "cli"}
    assert min(report["kills"].values()) >= 1
    assert report["sent"] >= 150
    assert (report["lost"], report["doubled"], report["wrong_pane"]) == (0, 0, 0)
    assert report["delivered"] == report["exactly_once"] == report["sent"]
    assert report["latency_s"]["p99"] < 5.0
    assert report["drain_s"] is not None
    assert_nothing_left(_state_dir(done.stderr))


def test_load_reports_throughput_latency_and_cpu_and_loses_nothing():
    done = _drill("load", "--sandboxes", "3", "--messages", "100", "--clients", "4",
                  "--idle-s", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert (report["sent"], report["delivered"]) == (100, 100)
    assert (report["lost"], report["doubled"], report["wrong_pane"]) == (0, 0, 0)
    assert report["accepted_per_s"] > 0 and report["delivered_per_s"] > 0
    latency = report["latency_s"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert report["server_cpu_pct"] > 0
    assert report["server_idle_cpu_pct_per_sandbox"] is not None
    assert_nothing_left(_state_dir(done.stderr))


def test_ctrl_c_during_chaos_removes_the_throwaway_team():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVISOR_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentvisor", "chaos", "--duration", "60", "--sandboxes", "1",
         "--image", sandbox_test_image()],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []

    def streaming() -> bool:
        lines.append(proc.stderr.readline())  # type: ignore[union-attr]
        return lines[-1].startswith("seed ") or proc.poll() is not None

    wait_until(streaming, timeout_s=120, interval_s=0, message="the stream to start")
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130  # Ctrl-C's exit status
    assert "interrupted: removing the throwaway team" in rest
    assert_nothing_left(_state_dir("".join(lines)))
