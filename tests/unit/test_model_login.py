"""The login refresh's pure parts and the login file's atomic rewrite."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from agentvisor.model.model_login import RefreshFailed, refresh_body, refreshed_login, write_login


def test_the_refresh_request_carries_the_logins_own_client_id_and_scopes():
    oauth = {"refreshToken": "rt", "scopes": ["user:inference", "user:profile"]}
    assert refresh_body(oauth, "default-client") == {
        "grant_type": "refresh_token",
        "refresh_token": "rt",
        "client_id": "default-client",
        "scope": "user:inference user:profile",
    }
    assert refresh_body({"refreshToken": "rt", "clientId": "own"}, "d")["client_id"] == "own"
    assert "scope" not in refresh_body({"refreshToken": "rt"}, "d")


def test_a_refreshed_login_keeps_everything_else_and_the_old_refresh_token_when_none_came():
    data = {"claudeAiOauth": {"accessToken": "a", "refreshToken": "r", "x": 1}, "other": 2}
    out = refreshed_login(data, {"access_token": "b", "expires_in": 100}, now=1000.0)
    assert out == {
        "claudeAiOauth": {"accessToken": "b", "refreshToken": "r", "x": 1, "expiresAt": 1100000},
        "other": 2,
    }
    assert data["claudeAiOauth"]["accessToken"] == "a"  # the input is left alone


@pytest.mark.parametrize(
    "answer",
    [None, {}, {"access_token": "b"}, {"access_token": "b", "expires_in": True}, {"expires_in": 5}],
)
def test_an_answer_without_a_token_and_an_expiry_is_a_failed_refresh(answer: object):
    with pytest.raises(RefreshFailed):
        refreshed_login({}, answer, 0.0)


def test_the_login_file_is_replaced_whole_with_its_mode(tmp_path: Path):
    login = tmp_path / ".credentials.json"
    login.write_text("{}")
    login.chmod(0o640)
    before = login.stat().st_ino
    write_login(login, {"claudeAiOauth": {"accessToken": "new"}})
    assert json.loads(login.read_text()) == {"claudeAiOauth": {"accessToken": "new"}}
    assert stat.S_IMODE(login.stat().st_mode) == 0o640
    assert login.stat().st_ino != before  # renamed over, never rewritten in place
    assert os.listdir(tmp_path) == [".credentials.json"]


def test_a_symlinked_login_file_is_replaced_where_it_points(tmp_path: Path):
    real = tmp_path / "real.json"
    real.write_text("{}")
    real.chmod(0o600)
    link = tmp_path / ".credentials.json"
    link.symlink_to(real)
    write_login(link, {"a": 1})
    assert link.is_symlink() and json.loads(real.read_text()) == {"a": 1}
    assert stat.S_IMODE(real.stat().st_mode) == 0o600


def test_a_login_that_lives_shorter_than_the_margin_is_not_refreshed_on_every_request(
    tmp_path: Path,
):
    from agentvisor.model.model_login import CredentialSource

    now = [1000.0]
    login = tmp_path / ".credentials.json"
    login.write_text(
        json.dumps({"claudeAiOauth": {"accessToken": "a", "refreshToken": "r", "expiresAt": 0}})
    )
    calls: list[dict[str, str]] = []

    def post(url: str, body: object) -> dict[str, object]:
        calls.append(dict(body))  # type: ignore[call-overload]
        return {"access_token": f"a{len(calls)}", "refresh_token": "r2", "expires_in": 120}

    source = CredentialSource({}, login, "http://token", "client", lambda: now[0], post=post)
    assert source.current().secret == "a1"
    now[0] += 30  # 90 s left: inside the 300 s margin, but more than half its 120 s life
    assert source.current().secret == "a1" and len(calls) == 1
    now[0] += 40  # 50 s left
    assert source.current().secret == "a2" and calls[-1]["refresh_token"] == "r2"
