"""The CLI starts without the server's stack: `agentvisor send` and friends import neither
FastAPI nor uvicorn, nor the Docker SDK, GitPython or the store until a command needs them."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

HEAVY = (
    "fastapi",
    "uvicorn",
    "starlette",
    "docker",
    "git",
    "sqlite_utils",
    "agentvisor.server.server",
)


def test_importing_the_cli_loads_nothing_of_the_server():
    probe = (
        "import sys, agentvisor.cli\n"
        f"heavy = {HEAVY!r}\n"
        "loaded = [m for m in heavy if m in sys.modules\n"
        "          and type(sys.modules[m]).__name__ != '_LazyModule']\n"
        "print(','.join(loaded))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=REPO, check=True)  # fmt: skip
    assert done.stdout.strip() == "", f"imported at CLI start: {done.stdout.strip()}"
