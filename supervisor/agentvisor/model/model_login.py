"""The host's model credential as the broker holds it: the environment's key or token, else the
host's Claude Code login (`~/.claude/.credentials.json`), which the broker refreshes with its
refresh token shortly before it expires (or after the upstream refused it) and writes back, so
that Claude Code on the host goes on with the rotated refresh token
(docs/sandboxes.md#credentials). Runs on worker threads: a refresh blocks the requests that
wait for it, never the event loop."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agentvisor.errors import AgentvisorError
from agentvisor.model.model_broker import Credential, credential_from_env, credential_from_login

log = logging.getLogger("agentvisor.model")

REFRESH_MARGIN_S = 300.0  # refresh a login that expires sooner than this
RETRY_AFTER_FAILURE_S = 30.0  # after a failed refresh, requests fail at once for this long
REFRESH_TIMEOUT_S = 15.0
FIX = "run `claude /login` on the host (as the user `agentvisor serve` runs as)"


class ModelUnavailable(AgentvisorError):
    status = 503


class RefreshFailed(Exception):
    """The token endpoint did not give a new login; the message says what it answered."""


# --- pure ----------------------------------------------------------------------------------------


def refresh_body(oauth: Mapping[str, Any], client_id: str) -> dict[str, str]:
    """The token request Claude Code sends for a login: its refresh token, its own client id
    (a login made with another client keeps it), and the scopes it holds."""
    body = {
        "grant_type": "refresh_token",
        "refresh_token": str(oauth["refreshToken"]),
        "client_id": str(oauth.get("clientId") or client_id),
    }
    scopes = oauth.get("scopes")
    if isinstance(scopes, list) and all(isinstance(s, str) for s in scopes) and scopes:
        body["scope"] = " ".join(scopes)
    return body


def refreshed_login(data: Mapping[str, Any], answer: Any, now: float) -> dict[str, Any]:
    """The login file's content after the token endpoint's `answer`: the new access token, the
    rotated refresh token (the old one when none came), the new expiry in ms, the granted
    scopes; everything else as it was. RefreshFailed when the answer is not a token answer."""
    if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
        raise RefreshFailed("the token endpoint's answer has no access_token")
    expires_in = answer.get("expires_in")
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool) or expires_in <= 0:
        raise RefreshFailed("the token endpoint's answer has no valid expires_in")
    out = dict(data)
    oauth = dict(out.get("claudeAiOauth") or {})
    oauth["accessToken"] = answer["access_token"]
    if isinstance(answer.get("refresh_token"), str) and answer["refresh_token"]:
        oauth["refreshToken"] = answer["refresh_token"]
    oauth["expiresAt"] = int((now + float(expires_in)) * 1000)
    if isinstance(answer.get("scope"), str) and answer["scope"].strip():
        oauth["scopes"] = answer["scope"].split()
    out["claudeAiOauth"] = oauth
    return out


def needs_refresh(credential: Credential, now: float, margin_s: float) -> bool:
    return credential.expires_at is not None and credential.expires_at - now < margin_s


# --- the login file ----------------------------------------------------------------------------


def write_login(path: Path, data: Mapping[str, Any]) -> None:
    """Replaces the login file at once (a temporary file in its folder, renamed over it), with
    the mode and owner it had: no reader ever sees half a file, and nobody who could not read
    the old one can read the new one."""
    target = Path(os.path.realpath(path))
    before = target.stat()
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), before.st_mode & 0o777)  # mkstemp made it 0600
            if (before.st_uid, before.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(file.fileno(), before.st_uid, before.st_gid)
            json.dump(data, file, indent=2)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    with contextlib.suppress(OSError):
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def post_refresh(token_url: str, body: Mapping[str, str]) -> Any:
    """The token endpoint's JSON answer; RefreshFailed for anything but a 200 with JSON."""
    try:
        with httpx.Client(trust_env=False, timeout=REFRESH_TIMEOUT_S) as http:
            answer = http.post(token_url, json=dict(body))
    except httpx.HTTPError as exc:
        raise RefreshFailed(f"cannot reach {token_url}: {exc}") from None
    if answer.status_code != 200:
        detail = answer.text[:200].replace("\n", " ")
        raise RefreshFailed(f"{token_url} answered {answer.status_code}: {detail}")
    try:
        return answer.json()
    except ValueError:
        raise RefreshFailed(f"{token_url} answered with something that is not JSON") from None


# --- the source ----------------------------------------------------------------------------------


@dataclass
class CredentialSource:
    """The host's credential, read again whenever the login file changes (Claude Code on the
    host may refresh it too), refreshed here one at a time: requests that find it expiring wait
    for the one refresh under way, then use its result."""

    env: Mapping[str, str]
    login_path: Path
    token_url: str  # the settings' claude_oauth_token_url and claude_oauth_client_id
    client_id: str
    clock: Callable[[], float] = time.time
    margin_s: float = REFRESH_MARGIN_S
    # Told of every refresh: (ok, detail); the broker turns it into an event.
    on_refresh: Callable[[bool, str], None] | None = None
    post: Callable[[str, Mapping[str, str]], Any] = post_refresh
    _seen: tuple[int, int, int] | None = None
    _data: dict[str, Any] | None = field(default=None, repr=False)
    _login: Credential | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _failed: tuple[float, str] | None = None  # when the last refresh failed, and why
    _lifetime_s: float | None = None  # of the last login this source refreshed
    refreshes: int = 0

    def current(self) -> Credential:
        from_env = credential_from_env(self.env)
        if from_env is not None:
            return from_env
        login = self._read()
        if needs_refresh(login, self.clock(), self._margin()):
            with self._lock:
                login = self._read()  # the refresh this request waited for may have done it
                if needs_refresh(login, self.clock(), self._margin()):
                    login = self._refresh(login, forced=False)
        return login

    def after_rejection(self, used: Credential) -> Credential | None:
        """The upstream refused `used` (401): a login newer than it, refreshed now unless the
        file already holds a newer one; None for a key, or when no new login can be had."""
        if used.kind != "oauth":
            return None
        with self._lock:
            try:
                login = self._read()
                if login.secret != used.secret:
                    return login
                fresh = self._refresh(login, forced=True)
            except ModelUnavailable:
                return None
            return fresh if fresh.secret != used.secret else None

    def problem(self) -> str | None:
        """What is wrong with the host's login and how to fix it, for the health answer."""
        if credential_from_env(self.env) is not None:
            return None
        if self._failed is not None:
            return self._failed[1]
        return None

    # -- inside -------------------------------------------------------------------------------
    def _margin(self) -> float:
        """The margin, but at most half a login's lifetime: a login that lives 4 minutes is
        not refreshed on every request."""
        if self._lifetime_s is None:
            return self.margin_s
        return min(self.margin_s, self._lifetime_s / 2)

    def _read(self) -> Credential:
        try:
            stat = self.login_path.stat()
        except OSError:
            raise ModelUnavailable(
                "the host has no model credential: set ANTHROPIC_API_KEY (or "
                "ANTHROPIC_AUTH_TOKEN) where `agentvisor serve` runs, or log in with `claude` "
                f"on the host ({self.login_path})"
            ) from None
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            try:
                text = self.login_path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ModelUnavailable(
                    f"cannot read the host's login {self.login_path}: {exc}"
                ) from None
            self._login = credential_from_login(text, str(self.login_path))
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            self._data = parsed if isinstance(parsed, dict) else None
            self._seen = seen
        if self._login is None:
            raise ModelUnavailable(
                f"{self.login_path} holds no Claude Code login: log in again with `claude`"
            )
        return self._login

    def _refresh(self, login: Credential, forced: bool) -> Credential:
        """A new login from the token endpoint, written back; on failure the old login while
        it is still valid (and not `forced`), else ModelUnavailable saying how to fix it."""
        now = self.clock()
        expired = login.expires_at is not None and login.expires_at <= now
        if self._failed is not None and now - self._failed[0] < RETRY_AFTER_FAILURE_S:
            if expired or forced:
                raise ModelUnavailable(self._failed[1])
            return login
        oauth = (self._data or {}).get("claudeAiOauth") or {}
        try:
            if not isinstance(oauth.get("refreshToken"), str) or not oauth["refreshToken"]:
                raise RefreshFailed(f"{self.login_path} holds no refresh token")
            answer = self.post(self.token_url, refresh_body(oauth, self.client_id))
            data = refreshed_login(self._data or {}, answer, self.clock())
            write_login(self.login_path, data)
        except (RefreshFailed, OSError) as exc:
            with contextlib.suppress(ModelUnavailable):
                newer = self._read()  # Claude Code on the host may have refreshed it just now
                if newer.secret != login.secret and not needs_refresh(newer, now, 0.0):
                    return newer
            message = (
                f"the host's Claude Code login ({self.login_path}) could not be refreshed: "
                f"{exc}; {FIX}"
            )
            self._failed = (now, message)
            log.warning("%s", message)
            self._tell(False, str(exc))
            if expired or forced:
                raise ModelUnavailable(message) from None
            return login
        self._failed = None
        self._lifetime_s = float(answer["expires_in"])
        self.refreshes += 1
        self._tell(True, f"expires in {float(answer['expires_in']):.0f} s")
        return self._read()

    def _tell(self, ok: bool, detail: str) -> None:
        if self.on_refresh is None:
            return
        try:
            self.on_refresh(ok, detail)
        except Exception:  # an event not written must not fail the request it is about
            log.exception("could not record the login refresh")


def default_login_path(settings_value: str | None, env: Mapping[str, str]) -> Path:
    if settings_value:
        return Path(settings_value).expanduser()
    return Path(env.get("HOME") or Path.home()) / ".claude" / ".credentials.json"


def credential_source(
    settings: Any,
    env: Mapping[str, str],
    clock: Callable[[], float],
    on_refresh: Callable[[bool, str], None] | None = None,
) -> CredentialSource:
    """The host's credential as the settings (a `Settings`) name it."""
    return CredentialSource(
        env,
        default_login_path(settings.claude_credentials_file, env),
        settings.claude_oauth_token_url,
        settings.claude_oauth_client_id,
        clock,
        margin_s=settings.claude_oauth_refresh_margin_s,
        on_refresh=on_refresh,
    )
