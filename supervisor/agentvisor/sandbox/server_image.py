"""The supervisor's own image, `agentvisor serve` in a container for compose (compose/).

The Python dependencies are downloaded as wheels on the host (where pip already reaches PyPI,
proxy and CA included) and installed offline in the build; agentvisor itself is built from the
source checkout. `agentvisor image build-supervisor` runs it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

import agentvisor
from agentvisor.errors import EngineUnavailable, SandboxError
from agentvisor.sandbox.build_context import Entry, context_tar, file_entry
from agentvisor.sandbox.docker_engine import docker_client
from agentvisor.sandbox.images import (
    IMAGE_PYTHON_VERSION,
    Progress,
    build_files,
    ensure_base_image,
    quiet,
    run_build,
)

DEFAULT_TAG = "agentvisor/supervisor:latest"
STAMP_NAME = ".agentvisor-stamp"
# setuptools and wheel build agentvisor from source in the image; pip replaces the venv's own.
BUILD_REQUIREMENTS = ("setuptools>=68", "wheel", "pip")
# Never pinned to the host's copies: the host venv's are older than the build needs.
UNPINNED = frozenset({"agentvisor", "pip", "setuptools", "wheel"})
# The image is Debian bookworm: glibc 2.36, so any manylinux wheel up to that runs.
IMAGE_GLIBC_MINOR = 36
OLDEST_GLIBC_MINOR = 17
SOURCES = ("pyproject.toml", "README.md", "supervisor", "agent_shim")
ENGINE_ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


# --- pure: what to download, what goes into the context ----------------------------------------


def runtime_requirements(pyproject_text: str) -> list[str]:
    """The package's own dependencies (no extras), as pyproject.toml lists them."""
    return list(tomllib.loads(pyproject_text)["project"]["dependencies"])


def pinned_constraints(installed: Iterable[tuple[str, str]]) -> list[str]:
    """`name==version` for each installed distribution: the image gets the versions the host
    tests with. Build tools and agentvisor itself are left free."""
    pins = {name.lower().replace("_", "-"): version for name, version in installed}
    return [f"{name}=={pins[name]}" for name in sorted(pins) if name not in UNPINNED]


def manylinux_platforms(engine_arch: str) -> list[str]:
    """pip `--platform` values for the image: pip does not widen `manylinux_2_X` by itself."""
    arch = ENGINE_ARCHES.get(engine_arch)
    if arch is None:
        raise SandboxError(
            f"the Docker engine's architecture {engine_arch} has no manylinux wheels here; "
            f"known: {', '.join(sorted(ENGINE_ARCHES))}"
        )
    minors = range(IMAGE_GLIBC_MINOR, OLDEST_GLIBC_MINOR - 1, -1)
    return [*(f"manylinux_2_{m}_{arch}" for m in minors), f"manylinux2014_{arch}"]


def wheels_stamp(requirements: list[str], constraints: list[str], platforms: list[str]) -> str:
    """A digest of everything that decides which wheels are downloaded."""
    text = "\n".join([IMAGE_PYTHON_VERSION, *requirements, "--", *constraints, "--", *platforms])
    return hashlib.sha256(text.encode()).hexdigest()


def _source_files(root: Path) -> Iterator[Path]:
    for name in SOURCES:
        top = root / name
        if top.is_file():
            yield top
            continue
        for path in sorted(top.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path


def build_context(root: Path, image_dir: Path, wheels: Path, requirements: list[str]) -> bytes:
    """The build context as an uncompressed tar: the Dockerfile and helpers, requirements.txt,
    the wheels and the package's source under src/. Owners and times are fixed, so an unchanged
    file never invalidates the layer cache."""

    def entries() -> Iterator[Entry]:
        for path in sorted(image_dir.iterdir()):
            if path.is_file():
                yield file_entry(path.name, path)
        yield Entry("requirements.txt", ("\n".join(requirements) + "\n").encode())
        for wheel in sorted(wheels.glob("*.whl")):
            yield file_entry(f"wheels/{wheel.name}", wheel)
        for path in _source_files(root):
            yield file_entry(f"src/{path.relative_to(root).as_posix()}", path)

    return context_tar(entries())


def source_checkout() -> Path:
    """The agentvisor source checkout this package runs from: the image installs agentvisor
    from its source (an installed wheel has none to give)."""
    root = Path(agentvisor.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "agent_shim").is_dir():
        raise SandboxError(
            "the supervisor image is built from an agentvisor source checkout (it installs "
            f"agentvisor from source), and {root} is none: run this from a checkout's venv"
        )
    return root


# --- I/O: pip on the host, the Docker build -----------------------------------------------------


def _installed() -> list[tuple[str, str]]:
    return [
        (dist.metadata["Name"], dist.version)
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"]
    ]


def download_wheels(
    requirements: list[str],
    platforms: list[str],
    wheels: Path,
    progress: Progress | None = None,
) -> Path:
    """Fill `wheels` with wheels of `requirements` (and their dependencies) for the image's
    Python; nothing is downloaded when the same set is there already."""
    progress = progress or quiet
    constraints = pinned_constraints(_installed())
    stamp = wheels_stamp(requirements, constraints, platforms)
    stamp_file = wheels / STAMP_NAME
    if stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
        return wheels
    progress(f"downloading the supervisor image's Python wheels into {wheels}")
    staging = wheels.with_name(wheels.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "constraints.txt").write_text("\n".join(constraints) + "\n")
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--python-version", IMAGE_PYTHON_VERSION,
        "--implementation", "cp", "--abi", f"cp{IMAGE_PYTHON_VERSION.replace('.', '')}",
        *(arg for platform in platforms for arg in ("--platform", platform)),
        "--dest", str(staging), "--constraint", str(staging / "constraints.txt"),
        *requirements, *BUILD_REQUIREMENTS,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
        raise SandboxError(
            f"cannot download the supervisor image's wheels ({(errors or ['no output'])[-1]}): "
            "check that pip reaches PyPI (proxy, PIP_CERT)"
        )
    (staging / "constraints.txt").unlink()
    (staging / STAMP_NAME).write_text(stamp + "\n")
    shutil.rmtree(wheels, ignore_errors=True)
    staging.rename(wheels)
    return wheels


def _engine_arch(client: docker.DockerClient) -> str:
    try:
        return str(client.info().get("Architecture", "x86_64"))
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise EngineUnavailable(
            f"the Docker engine does not answer ({exc}): check dockerd"
        ) from exc


def build_server_image(
    tag: str = DEFAULT_TAG,
    base_image: str | None = None,
    no_cache: bool = False,
    progress: Progress | None = None,
    client: docker.DockerClient | None = None,
) -> str:
    """Build the supervisor's image as `tag` and return its id."""
    progress = progress or quiet
    client = client or docker_client()
    root = source_checkout()
    base = ensure_base_image(base_image, progress)
    requirements = runtime_requirements((root / "pyproject.toml").read_text())
    wheels = download_wheels(requirements, manylinux_platforms(_engine_arch(client)),
                             root / "build" / "supervisor" / "wheels", progress)  # fmt: skip
    context = build_context(root, build_files() / "supervisor", wheels, requirements)
    progress(f"building {tag} from {base} ({len(context) // 2**20} MB context)")
    return run_build(
        client,
        tag,
        progress,
        fileobj=io.BytesIO(context),
        custom_context=True,
        dockerfile="Dockerfile",
        buildargs={"BASE_IMAGE": base},
        labels={"org.agentvisor.image": "supervisor"},
        nocache=no_cache,
    )
