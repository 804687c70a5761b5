"""Who a sandbox runs as: on a root host a uid/gid that is no account of the host's."""

from __future__ import annotations

import os
from pathlib import Path

from agentvisor.config import Settings
from agentvisor.errors import SandboxError

PASSWD = Path("/etc/passwd")
GROUP = Path("/etc/group")


def ids_in(table: str) -> set[int]:
    """The numeric ids (third field) of a passwd or group file's text."""
    found = set()
    for line in table.splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit():
            found.add(int(fields[2]))
    return found


def check_not_an_account(uid: int, gid: int, passwd: str, group: str) -> None:
    """Refuse a sandbox uid or gid that names a real account or group of the host: whoever
    logs in as it would own the agents' files (and could plant what the host then reads)."""
    if uid in ids_in(passwd):
        raise SandboxError(
            f"the sandbox uid {uid} is an account in /etc/passwd on this host; set "
            "sandbox_uid (and sandbox_gid) in config.toml to an id no account has"
        )
    if gid in ids_in(group):
        raise SandboxError(
            f"the sandbox gid {gid} is a group in /etc/group on this host; set sandbox_gid in "
            "config.toml to an id no group has"
        )


def sandbox_owner(settings: Settings) -> tuple[int, int] | None:
    """The (uid, gid) a root host hands the agents' clones to; None when the host is not root
    (its clones are its own user's, which the sandbox then runs as)."""
    if os.getuid() != 0:
        return None
    uid, gid = settings.sandbox_ids()
    if uid == 0:
        raise SandboxError("sandboxes never run as root: set sandbox_uid to another id")
    if settings.sandbox_uid is None:  # our default: make sure it is nobody's
        check_not_an_account(
            uid,
            gid,
            PASSWD.read_text(encoding="utf-8", errors="replace") if PASSWD.exists() else "",
            GROUP.read_text(encoding="utf-8", errors="replace") if GROUP.exists() else "",
        )
    return uid, gid
