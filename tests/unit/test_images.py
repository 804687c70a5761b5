"""The pure parts of agentvisor.sandbox.images: which CA certificates go into the image, which
CLIs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentvisor.errors import InvalidInput
from agentvisor.sandbox.images import (
    check_agent_clis,
    detect_extra_ca,
    extra_certificates,
    pem_certificates,
)


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
