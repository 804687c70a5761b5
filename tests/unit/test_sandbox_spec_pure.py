"""`build_spec` from gathered inputs alone: no git, no files, no folders. Every path below
names nothing on disk, and the spec still comes out, or the rule it breaks is named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agentvisor.config import Settings
from agentvisor.errors import SandboxError
from agentvisor.sandbox.mounts import Mount
from agentvisor.sandbox.sandbox_policy import ProjectSandboxConfig
from agentvisor.sandbox.sandbox_spec import (
    LABEL_CONFIG,
    LABEL_PROJECT,
    SpecInputs,
    build_spec,
)

NOWHERE = Path("/nonexistent/agentvisor-pure-test")


def inputs(**changes: object) -> SpecInputs:
    settings = Settings(state_dir=NOWHERE / "state")
    base = SpecInputs(
        settings=settings,
        project="shop",
        role="developer",
        profile="demo",
        image="agentvisor/sandbox:test",
        uid=4242,
        gid=4242,
        worktree=NOWHERE / "clone",
        socket_dir=NOWHERE / "sock",
        api_dir=NOWHERE / "asock" / "developer",
        token_file=NOWHERE / "developer.token",
        token="tok_123-abc",
        options=ProjectSandboxConfig(env={"PROJECT_FLAG": "1"}, memory_mb=512),
        owner_labels={LABEL_PROJECT: "shop", "agentvisor.managed": "1"},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_build_spec_needs_nothing_on_disk() -> None:
    spec = build_spec(inputs())
    assert not NOWHERE.exists()
    assert spec.name == "agentvisor-shop-developer"
    assert spec.user == "4242:4242"
    assert spec.mem_limit_mb == 512
    assert spec.env["PROJECT_FLAG"] == "1"
    assert "tok_123-abc" in spec.env["HTTP_PROXY"]
    assert {m.source for m in spec.mounts} >= {str(NOWHERE / "clone"), str(NOWHERE / "sock")}
    assert spec.labels[LABEL_PROJECT] == "shop"


def test_the_same_inputs_give_the_same_spec_and_fingerprint() -> None:
    first, second = build_spec(inputs()), build_spec(inputs())
    assert first == second
    assert first.labels[LABEL_CONFIG] == second.labels[LABEL_CONFIG]
    assert build_spec(inputs(resume=True)).labels[LABEL_CONFIG] == first.labels[LABEL_CONFIG]
    assert build_spec(inputs(image="other:1")).labels[LABEL_CONFIG] != first.labels[LABEL_CONFIG]


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"profile": "auto"}, "unknown agent profile"),
        ({"role": "../x"}, "cannot name a container"),
        ({"token": "not a token\n"}, "does not hold a token"),
        ({"extra_labels": {"agentvisor.role": "x"}}, "agentvisor's own"),
        ({"extra_env": {"AGENTVISOR_ROLE": "x"}}, "fixed-identity"),
        ({"options": ProjectSandboxConfig(env={"HOME": "/"})}, "HOME"),
        (
            {"credential_mounts": (Mount(NOWHERE / "c", Path("/home/agent/.c"), False),)},
            "read-only",
        ),
        ({"profile": "generic"}, "agent_command and ready_pattern"),
    ],
)
def test_build_spec_refuses_what_would_weaken_the_sandbox(
    changes: dict[str, object], refusal: str
) -> None:
    with pytest.raises(SandboxError, match=refusal):
        build_spec(inputs(**changes))
