"""The pure parts of agentvisor.sandbox.server_image: which wheels, for which platform, in which
context."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from agentvisor.errors import SandboxError
from agentvisor.sandbox.server_image import (
    build_context,
    manylinux_platforms,
    pinned_constraints,
    runtime_requirements,
    wheels_stamp,
)

REPO = Path(__file__).resolve().parents[2]


def test_runtime_requirements_are_pyprojects_dependencies_without_extras():
    text = """
[project]
name = "x"
dependencies = ["docker>=7.0", "httpx>=0.27"]
[project.optional-dependencies]
dev = ["pytest>=8.0"]
"""
    assert runtime_requirements(text) == ["docker>=7.0", "httpx>=0.27"]
    assert "fastapi>=0.110" in runtime_requirements((REPO / "pyproject.toml").read_text())


def test_constraints_pin_the_hosts_versions_but_leave_build_tools_and_agentvisor_free():
    installed = [
        ("Pydantic_Core", "2.1.0"),
        ("agentvisor", "0.1.0"),
        ("setuptools", "65.5.0"),
        ("pip", "23.2"),
        ("wheel", "0.41"),
        ("docker", "7.1.0"),
    ]
    assert pinned_constraints(installed) == ["docker==7.1.0", "pydantic-core==2.1.0"]


def test_platforms_cover_every_manylinux_glibc_the_bookworm_image_can_run():
    platforms = manylinux_platforms("x86_64")
    assert platforms[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_17_x86_64" in platforms
    assert platforms[-1] == "manylinux2014_x86_64"
    assert manylinux_platforms("arm64") == manylinux_platforms("aarch64")
    with pytest.raises(SandboxError, match="s390x"):
        manylinux_platforms("s390x")


def test_the_wheels_stamp_changes_with_any_pin():
    one = wheels_stamp(["docker>=7"], ["docker==7.1.0"], ["manylinux2014_x86_64"])
    assert one == wheels_stamp(["docker>=7"], ["docker==7.1.0"], ["manylinux2014_x86_64"])
    assert one != wheels_stamp(["docker>=7"], ["docker==7.2.0"], ["manylinux2014_x86_64"])


def test_the_context_holds_the_image_files_wheels_and_source_and_is_reproducible(tmp_path: Path):
    root = tmp_path / "repo"
    (root / "supervisor" / "__pycache__").mkdir(parents=True)
    (root / "supervisor" / "__init__.py").write_text("")
    (root / "supervisor" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (root / "agent_shim" / "bin").mkdir(parents=True)
    (root / "agent_shim" / "bin" / "agent").write_text("#!/bin/sh\n")
    (root / "pyproject.toml").write_text("[project]\n")
    (root / "README.md").write_text("readme\n")
    image_dir = tmp_path / "image"
    image_dir.mkdir()
    (image_dir / "Dockerfile").write_text("FROM scratch\n")
    (image_dir / "healthcheck.py").write_text("print()\n")
    (image_dir / "healthcheck.py").chmod(0o755)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "docker-7.1.0-py3-none-any.whl").write_bytes(b"PK")
    (wheels / ".agentvisor-stamp").write_text("x\n")

    data = build_context(root, image_dir, wheels, ["docker>=7"])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        requirements = tar.extractfile("requirements.txt").read()  # type: ignore[union-attr]
        modes = {name: tar.getmember(name).mode for name in ("healthcheck.py", "Dockerfile")}
    assert sorted(names) == [
        "Dockerfile",
        "healthcheck.py",
        "requirements.txt",
        "src/README.md",
        "src/agent_shim/bin/agent",
        "src/pyproject.toml",
        "src/supervisor/__init__.py",
        "wheels/docker-7.1.0-py3-none-any.whl",
    ]
    assert requirements == b"docker>=7\n"
    assert modes == {"healthcheck.py": 0o755, "Dockerfile": 0o644}
    assert build_context(root, image_dir, wheels, ["docker>=7"]) == data  # the cache holds
