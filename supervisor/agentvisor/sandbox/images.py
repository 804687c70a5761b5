"""The sandbox image: make sure a base image exists, prepare the build context, build the image.

Used by `agentvisor image` and `agentvisor up`; `python -m agentvisor.sandbox.images` is the same
for make.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import requests.exceptions

from agentvisor.errors import AgentvisorError, EngineUnavailable, InvalidInput, SandboxError
from agentvisor.sandbox.docker_engine import docker_client

Progress = Callable[[str], None]

REPO_ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = "images/sandbox/Dockerfile"
BUILD_BASE_SCRIPT = REPO_ROOT / "images" / "base" / "build-base.sh"
# Files the Dockerfile copies from the context that are made here, not kept in git.
CONTEXT_EXTRAS = REPO_ROOT / "build" / "image"

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
    if not BUILD_BASE_SCRIPT.is_file():
        raise SandboxError(
            f"{BUILD_BASE_SCRIPT} is missing: build images from an agentvisor source checkout"
        )
    env = dict(os.environ)
    if base_image:
        env["BASE_IMAGE"] = base_image
    # The script writes progress to stderr and only the answer to stdout.
    with subprocess.Popen(
        ["bash", str(BUILD_BASE_SCRIPT)],
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


def prepare_context(extra_ca: Path | None, progress: Progress | None = None) -> None:
    """Fill build/image/: the libtmux wheel for the image's Python, and the extra CAs if any."""
    progress = progress or quiet
    wheels = CONTEXT_EXTRAS / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    try:
        version = importlib.metadata.version("libtmux")
    except importlib.metadata.PackageNotFoundError as exc:
        raise SandboxError("libtmux is not installed here: run `make setup`") from exc
    wanted = f"libtmux-{version}-"
    for stale in wheels.glob("*.whl"):
        if not stale.name.startswith(wanted):
            stale.unlink()
    if not any(wheels.glob(f"{wanted}*.whl")):
        progress(f"downloading the libtmux {version} wheel into {wheels}")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            IMAGE_PYTHON_VERSION,
            "--dest",
            str(wheels),
            f"libtmux=={version}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise SandboxError(
                f"cannot download the libtmux {version} wheel ({tail}): check that pip reaches "
                "PyPI, or put the wheel in build/image/wheels/"
            )

    ca_dir = CONTEXT_EXTRAS / "ca"
    ca_dir.mkdir(parents=True, exist_ok=True)
    certificates: list[str] = []
    if extra_ca is not None:
        try:
            text = extra_ca.read_text(errors="replace")
        except OSError as exc:
            raise InvalidInput(f"cannot read the CA bundle {extra_ca}: {exc.strerror}") from exc
        if not pem_certificates(text):
            raise InvalidInput(f"{extra_ca} holds no PEM certificate: give a PEM bundle")
        certificates = extra_certificates(text, _system_certificate_bodies())
    # One file per certificate, as update-ca-certificates wants; unchanged files keep the cache.
    wanted_files = {f"extra-{i:03d}.crt": pem for i, pem in enumerate(certificates)}
    for old in ca_dir.iterdir():
        if old.name not in wanted_files:
            old.unlink()
    for name, pem in wanted_files.items():
        path = ca_dir / name
        if not path.is_file() or path.read_text() != pem:
            path.write_text(pem)
    if extra_ca is not None:
        progress(f"extra CA certificates from {extra_ca}: {len(certificates)} not in Debian's set")


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
    prepare_context(extra_ca, progress)
    progress(f"building {tag} from {base} (agent CLIs: {agent_clis})")
    return run_build(
        client,
        tag,
        progress,
        path=str(REPO_ROOT),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentvisor.sandbox.images",
        description="Build the agentvisor sandbox image.",
    )
    parser.add_argument("--tag", default=None, help=f"default {DEFAULT_TAG}, {TEST_TAG} for none")
    parser.add_argument("--agent-clis", default="claude", help="claude (default) or none")
    parser.add_argument("--base-image", default=None, help="default: chosen by build-base.sh")
    parser.add_argument("--extra-ca", default="auto", help="PEM bundle, none, or auto (default)")
    parser.add_argument("--uid", type=int, default=1000, help="build-time uid of `agent`")
    parser.add_argument("--gid", type=int, default=1000, help="build-time gid of `agent`")
    parser.add_argument("--no-cache", action="store_true")
    args = parser.parse_args(argv)

    tag = args.tag or (TEST_TAG if args.agent_clis == "none" else DEFAULT_TAG)
    extra_ca: Path | Literal["auto"] | None
    if args.extra_ca == "auto":
        extra_ca = "auto"
    elif args.extra_ca == "none":
        extra_ca = None
    else:
        extra_ca = Path(args.extra_ca)

    try:
        image_id = build_sandbox_image(
            tag=tag,
            agent_clis=args.agent_clis,
            extra_ca=extra_ca,
            base_image=args.base_image,
            agent_uid=args.uid,
            agent_gid=args.gid,
            no_cache=args.no_cache,
            progress=to_stderr,
        )
    except AgentvisorError as exc:
        print(f"agentvisor image: {exc.message}", file=sys.stderr)
        return 1
    print(f"{tag} {image_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
