"""The pure parts of agentvisor.sandbox.images: which CA certificates go into the image, which
CLIs, what the build context holds and where its files are found."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from agentvisor.errors import InvalidInput
from agentvisor.sandbox.build_context import context_tar
from agentvisor.sandbox.images import (
    DOCKERFILE,
    agent_shim_dir,
    build_files,
    cache_dir,
    check_agent_clis,
    detect_extra_ca,
    extra_certificates,
    pem_certificates,
    sandbox_context_entries,
)
from tests.conftest import REPO


def pem(body: str) -> str:
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


PUBLIC = pem("QUJD" * 40)
PROXY = pem("WFla" * 40)


def test_only_certificates_missing_from_the_known_set_are_extra():
    bundle = PUBLIC + "# a comment between blocks\n" + PROXY
    known = pem_certificates(PUBLIC)
    assert extra_certificates(bundle, known) == [PROXY]


def test_certificates_compare_by_content_not_by_line_breaks():
    rewrapped = PUBLIC.replace("\n", "\r\n")
    assert extra_certificates(rewrapped, pem_certificates(PUBLIC)) == []


def test_a_bundle_of_unknown_certificates_is_kept_whole_and_in_order():
    assert extra_certificates(PROXY + PUBLIC, set()) == [PROXY, PUBLIC]


def test_explicit_extra_ca_wins_and_none_disables(tmp_path: Path):
    bundle = tmp_path / "corp.pem"
    bundle.write_text(PROXY)
    other = tmp_path / "other.pem"
    other.write_text(PUBLIC)
    assert detect_extra_ca({"AGENTVISOR_EXTRA_CA": str(bundle), "SSL_CERT_FILE": str(other)}) == (
        bundle
    )
    assert detect_extra_ca({"AGENTVISOR_EXTRA_CA": "none", "SSL_CERT_FILE": str(other)}) is None


def test_explicit_extra_ca_that_is_not_a_file_is_refused(tmp_path: Path):
    with pytest.raises(InvalidInput, match="AGENTVISOR_EXTRA_CA"):
        detect_extra_ca({"AGENTVISOR_EXTRA_CA": str(tmp_path / "missing.pem")})


def test_host_ca_settings_are_used_when_they_name_a_file(tmp_path: Path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(PROXY)
    env = {"NODE_EXTRA_CA_CERTS": str(tmp_path / "gone.pem"), "SSL_CERT_FILE": str(bundle)}
    assert detect_extra_ca(env) == bundle
    assert detect_extra_ca({}, system_bundle=tmp_path / "none.crt") is None


def test_without_a_setting_the_systems_bundle_is_used(tmp_path: Path):
    """A fresh shell (no CA variable set) builds the image the same as the user's own shell:
    a CA the admin installed into the system's bundle is trusted in the image too."""
    system = tmp_path / "ca-certificates.crt"
    system.write_text(PUBLIC + PROXY)
    assert detect_extra_ca({}, system_bundle=system) == system
    assert detect_extra_ca({"AGENTVISOR_EXTRA_CA": "none"}, system_bundle=system) is None


@pytest.mark.parametrize("value", ["claude", "none", " claude "])
def test_known_agent_clis_are_accepted(value: str):
    check_agent_clis(value)


@pytest.mark.parametrize("value", ["", "codex", "claude,codex", "none,claude"])
def test_unknown_agent_clis_are_refused(value: str):
    with pytest.raises(InvalidInput):
        check_agent_clis(value)


def test_the_build_files_and_agent_shim_are_found_through_the_package():
    assert build_files() == REPO / "supervisor" / "agentvisor" / "images"
    assert (build_files() / DOCKERFILE).is_file()
    assert agent_shim_dir() == REPO / "agent_shim"


def test_the_cache_follows_the_same_rule_as_build_base(tmp_path: Path):
    assert cache_dir({"AGENTVISOR_CACHE": str(tmp_path)}) == tmp_path
    assert cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "agentvisor"
    assert cache_dir({}) == Path.home() / ".cache" / "agentvisor"


def _tree(root: Path, mode: int) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "shim.cpython-311.pyc").write_bytes(b"\0")
    (root / "shim.py").write_text("print()\n")
    (root / "bin" / "agent").write_text("#!/bin/sh\n")
    for path in (root / "shim.py", root / "bin" / "agent"):
        path.chmod(mode)
    return root


def test_the_sandbox_context_is_the_same_whatever_modes_the_files_have(tmp_path: Path):
    """A checkout (git's modes) and an installed wheel (pip's) give one context: one cache."""
    image_files = tmp_path / "sandbox"
    image_files.mkdir()
    (image_files / "Dockerfile").write_text("FROM scratch\n")
    wheel = tmp_path / "libtmux-0.1-py3-none-any.whl"
    wheel.write_bytes(b"PK")

    def context(shim: Path) -> bytes:
        return context_tar(sandbox_context_entries(image_files, shim, [wheel], [PROXY]))

    one = context(_tree(tmp_path / "a", 0o755))
    assert one == context(_tree(tmp_path / "b", 0o600))
    with tarfile.open(fileobj=io.BytesIO(one)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("ca/extra-000.crt").read() == PROXY.encode()  # type: ignore[union-attr]
    assert sorted(members) == [
        "agent_shim", "agent_shim/bin", "agent_shim/bin/agent", "agent_shim/shim.py", "ca",
        "ca/extra-000.crt", "sandbox", "sandbox/Dockerfile", "wheels",
        "wheels/libtmux-0.1-py3-none-any.whl",
    ]  # fmt: skip
    assert {m.mode for m in members.values() if m.isfile()} == {0o644}
    assert {(m.uid, m.gid, m.mtime) for m in members.values()} == {(0, 0, 0)}


def test_image_build_with_an_unknown_agent_cli_is_one_line():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "supervisor"), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-m", "agentvisor", "image", "build", "--agent-clis", "codex"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: unknown agent CLI codex: use claude or none"
    ], done.stderr
