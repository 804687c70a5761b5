"""The sandbox image: make sure a base image exists, make the build context, build the image.

Used by `agentvisor image build` and `agentvisor up`. The build files ship in the package
(`agentvisor/images/`: in a checkout the link `supervisor/agentvisor/images` to the top-level
`images/`), and so does agent_shim,
which the image copies: an installed agentvisor builds its images without a source checkout.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import io
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import requests.exceptions

from agentvisor.errors import EngineUnavailable, InvalidInput, SandboxError
from agentvisor.sandbox.build_context import Entry, context_tar, tree_entries
from agentvisor.sandbox.docker_engine import docker_client

Progress = Callable[[str], None]

# The sandbox's context: sandbox/ (these build files), agent_shim/, wheels/ and ca/ (made here).
DOCKERFILE = "sandbox/Dockerfile"

DEFAULT_TAG = "agentvisor/sandbox:latest"
TEST_TAG = "agentvisor/sandbox:test"
KNOWN_AGENT_CLIS = ("claude",)
# The image's python3 (Debian bookworm): the wheels must suit it, not the host's Python.
IMAGE_PYTHON_VERSION = "3.11"
# Where the host says which CA bundle it trusts; the first that names a file is used.
EXTRA_CA_ENV = (
    "AGENTVISOR_EXTRA_CA",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "PIP_CERT",
)
# What the host's own tools (curl, git, apt) trust when nothing names a bundle: a CA the admin
# installed (update-ca-certificates) is in it.
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Debian's copies of the public CAs: certificates found there are in the image already.
SYSTEM_CA_DIR = Path("/usr/share/ca-certificates")
BUILD_TIMEOUT_S = 3600

_PEM_BLOCK = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL
)


def quiet(_line: str) -> None:
    """Progress that shows nothing."""


def to_stderr(line: str) -> None:
    """Progress as lines on stderr, for the command-line builds."""
    print(line, file=sys.stderr, flush=True)


def build_files() -> Path:
    """The folder of the images' build files: base/, sandbox/, supervisor/ (package data)."""
    found = importlib.resources.files("agentvisor") / "images"
    if not isinstance(found, Path) or not (found / "sandbox" / "Dockerfile").is_file():
        raise SandboxError(
            f"the image build files are missing from the agentvisor package ({found}): "
            "reinstall agentvisor"
        )
    return found


def agent_shim_dir() -> Path:
    """The agent_shim package the image copies: the checkout's, or the one installed beside
    agentvisor (found, not imported: the host side never runs it)."""
    spec = importlib.util.find_spec("agent_shim")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations or not (Path(locations[0]) / "shim.py").is_file():
        raise SandboxError("agent_shim is not installed beside agentvisor: reinstall agentvisor")
    return Path(locations[0])


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where image builds keep what they download: $AGENTVISOR_CACHE, else
    ${XDG_CACHE_HOME:-~/.cache}/agentvisor (the same rule as images/base/build-base.sh)."""
    explicit = environ.get("AGENTVISOR_CACHE", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "agentvisor"


def image_exists(tag: str, client: docker.DockerClient | None = None) -> bool:
    client = client or docker_client()
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise SandboxError(f"cannot look up image {tag}: {exc.explanation or exc}") from exc
    return True


def ensure_base_image(base_image: str | None = None, progress: Progress | None = None) -> str:
    """Return the name of a Debian bookworm base image present locally, building one if needed.

    Runs images/base/build-base.sh: `base_image` (default debian:bookworm-slim) if present or
    pullable, else agentvisor/base:bookworm made with debootstrap (which needs root or sudo).
    """
    progress = progress or quiet
    script = build_files() / "base" / "build-base.sh"
    env = dict(os.environ)
    if base_image:
        env["BASE_IMAGE"] = base_image
    # The script writes progress to stderr and only the answer to stdout.
    with subprocess.Popen(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        last = ""
        for line in proc.stderr:
            line = line.rstrip()
            if line:
                last = line
                progress(line)
        answer = proc.stdout.read().strip().splitlines()
    if proc.returncode != 0 or not answer:
        reason = last.removeprefix("build-base: ERROR: ") or "no output"
        raise SandboxError(f"the base image could not be made: {reason}")
    return answer[-1]


def detect_extra_ca(
    environ: Mapping[str, str] = os.environ, system_bundle: Path = SYSTEM_CA_BUNDLE
) -> Path | None:
    """The CA bundle the host trusts, whose certificates beyond the public ones go into the image.

    AGENTVISOR_EXTRA_CA names a PEM file, or is `none` to add nothing; otherwise the first of
    NODE_EXTRA_CA_CERTS, REQUESTS_CA_BUNDLE, SSL_CERT_FILE, PIP_CERT that names a file; else
    the system's bundle, so that a fresh shell with none of these set builds the same image.
    """
    explicit = environ.get("AGENTVISOR_EXTRA_CA", "").strip()
    if explicit.lower() == "none":
        return None
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise InvalidInput(
                f"AGENTVISOR_EXTRA_CA={explicit} is not a file: point it at a PEM bundle or "
                "set it to none"
            )
        return path
    for name in EXTRA_CA_ENV[1:]:
        value = environ.get(name, "").strip()
        if value and Path(value).is_file():
            return Path(value)
    return system_bundle if system_bundle.is_file() else None


def pem_certificates(text: str) -> dict[str, str]:
    """The certificates in a PEM text, by their base64 body without whitespace."""
    return {"".join(m.group(1).split()): m.group(0) + "\n" for m in _PEM_BLOCK.finditer(text)}


def extra_certificates(bundle_text: str, known_bodies: Iterable[str]) -> list[str]:
    """The PEM certificates of `bundle_text` that are not among `known_bodies`, in order."""
    known = set(known_bodies)
    return [pem for body, pem in pem_certificates(bundle_text).items() if body not in known]


def _system_certificate_bodies(ca_dir: Path = SYSTEM_CA_DIR) -> set[str]:
    bodies: set[str] = set()
    if ca_dir.is_dir():
        for crt in ca_dir.rglob("*.crt"):
            bodies.update(pem_certificates(crt.read_text(errors="replace")))
    return bodies


def libtmux_wheel(progress: Progress | None = None, cache: Path | None = None) -> Path:
    """The wheel of the libtmux installed here, for the image's Python: downloaded once into
    the cache's wheels/ folder."""
    progress = progress or quiet
    wheels = (cache or cache_dir()) / "wheels"
    try:
        version = importlib.metadata.version("libtmux")
    except importlib.metadata.PackageNotFoundError as exc:
        raise SandboxError("libtmux is not installed here: reinstall agentvisor") from exc
    wanted = f"libtmux-{version}-"
    found = sorted(wheels.glob(f"{wanted}*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    progress(f"downloading the libtmux {version} wheel into {wheels}")
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--only-binary=:all:", "--python-version", IMAGE_PYTHON_VERSION,
        "--dest", str(wheels), f"libtmux=={version}",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(wheels.glob(f"{wanted}*.whl"))
    if done.returncode != 0 or not found:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SandboxError(
            f"cannot download the libtmux {version} wheel ({tail}): check that pip reaches "
            f"PyPI, or put the wheel in {wheels}/"
        )
    return found[0]


def extra_ca_certificates(extra_ca: Path | None, progress: Progress | None = None) -> list[str]:
    """The certificates of the bundle `extra_ca` that Debian's set lacks (none for None)."""
    if extra_ca is None:
        return []
    try:
        text = extra_ca.read_text(errors="replace")
    except OSError as exc:
        raise InvalidInput(f"cannot read the CA bundle {extra_ca}: {exc.strerror}") from exc
    if not pem_certificates(text):
        raise InvalidInput(f"{extra_ca} holds no PEM certificate: give a PEM bundle")
    certificates = extra_certificates(text, _system_certificate_bodies())
    (progress or quiet)(
        f"extra CA certificates from {extra_ca}: {len(certificates)} not in Debian's set"
    )
    return certificates


def sandbox_context_entries(
    image_files: Path, shim: Path, wheels: Iterable[Path], certificates: Iterable[str]
) -> Iterator[Entry]:
    """What images/sandbox/Dockerfile copies: sandbox/ (the build files), ca/ (one file per
    extra certificate, as update-ca-certificates wants), wheels/ and agent_shim/. Every mode is
    0644 (the Dockerfile sets what runs), so that a checkout and an installed package, which
    may keep modes differently, give the same context."""
    yield from tree_entries("sandbox", image_files, keep_mode=False)
    yield Entry("ca", None)
    for i, pem in enumerate(certificates):
        yield Entry(f"ca/extra-{i:03d}.crt", pem.encode())
    yield Entry("wheels", None)
    for wheel in sorted(wheels):
        yield Entry(f"wheels/{wheel.name}", wheel.read_bytes())
    yield from tree_entries("agent_shim", shim, keep_mode=False)


def check_agent_clis(agent_clis: str) -> None:
    """Accept `none` or a comma-separated list of known agent CLIs."""
    names = [n.strip() for n in agent_clis.split(",") if n.strip()]
    if names == ["none"]:
        return
    unknown = [n for n in names if n not in KNOWN_AGENT_CLIS]
    if not names or unknown:
        raise InvalidInput(
            f"unknown agent CLI {', '.join(unknown) or repr(agent_clis)}: use "
            f"{', '.join(KNOWN_AGENT_CLIS)} or none"
        )


def build_sandbox_image(
    tag: str = DEFAULT_TAG,
    agent_clis: str = "claude",
    extra_ca: Path | Literal["auto"] | None = "auto",
    base_image: str | None = None,
    agent_uid: int = 1000,
    agent_gid: int = 1000,
    no_cache: bool = False,
    progress: Progress | None = None,
    client: docker.DockerClient | None = None,
) -> str:
    """Build the sandbox image as `tag` and return its id.

    `agent_clis`: comma-separated CLIs to install (`claude`), or `none` for the test image.
    `extra_ca`: a PEM bundle whose certificates the image trusts too, None for none, or "auto"
    for `detect_extra_ca()`. `base_image`: None to let `ensure_base_image` choose.
    """
    progress = progress or quiet
    check_agent_clis(agent_clis)
    client = client or docker_client()
    if extra_ca == "auto":
        extra_ca = detect_extra_ca()
    base = ensure_base_image(base_image, progress)
    context = context_tar(
        sandbox_context_entries(
            build_files() / "sandbox",
            agent_shim_dir(),
            [libtmux_wheel(progress)],
            extra_ca_certificates(extra_ca, progress),
        )
    )
    progress(f"building {tag} from {base} (agent CLIs: {agent_clis})")
    return run_build(
        client,
        tag,
        progress,
        fileobj=io.BytesIO(context),
        custom_context=True,
        dockerfile=DOCKERFILE,
        buildargs={
            "BASE_IMAGE": base,
            "AGENT_CLIS": agent_clis,
            "AGENT_UID": str(agent_uid),
            "AGENT_GID": str(agent_gid),
        },
        labels={"org.agentvisor.agent-clis": agent_clis},
        nocache=no_cache,
    )


def run_build(client: docker.DockerClient, tag: str, progress: Progress, **build_args: Any) -> str:
    """`docker build` through the SDK with the output fed to `progress`; the image id.
    Engine failures become SandboxError / EngineUnavailable naming the tag."""
    try:
        stream = client.api.build(
            tag=tag, rm=True, forcerm=True, pull=False, decode=True,
            timeout=BUILD_TIMEOUT_S, **build_args,
        )  # fmt: skip
        image_id = follow_build(stream, tag, progress)
        return image_id or str(client.images.get(tag).id)
    except docker.errors.APIError as exc:
        raise SandboxError(f"building {tag} failed: {exc.explanation or exc}") from exc
    except requests.exceptions.RequestException as exc:
        raise EngineUnavailable(
            f"the Docker engine stopped answering while building {tag} ({exc}): check dockerd"
        ) from exc


def follow_build(stream: Iterable[dict[str, Any]], tag: str, progress: Progress) -> str | None:
    image_id: str | None = None
    for chunk in stream:
        if "error" in chunk:
            raise SandboxError(
                f"building {tag} failed: {str(chunk['error']).strip()} (the build output above "
                "shows the step)"
            )
        if "stream" in chunk:
            for line in str(chunk["stream"]).splitlines():
                if line.strip():
                    progress(line.rstrip())
        elif "status" in chunk:
            progress(" ".join(str(chunk[k]) for k in ("id", "status", "progress") if k in chunk))
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = str(aux["ID"])
    return image_id


def default_tag(agent_clis: str) -> str:
    """The tag a build gets when none is given: the test image's for `none`."""
    return TEST_TAG if agent_clis.strip() == "none" else DEFAULT_TAG


def extra_ca_choice(value: str) -> Path | Literal["auto"] | None:
    """`--extra-ca`: `auto` (detect_extra_ca), `none`, or a PEM bundle's path."""
    if value == "auto":
        return "auto"
    if value == "none":
        return None
    return Path(value)
