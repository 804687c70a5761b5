"""An agent's token as a file for its sandbox: 0400, owned by the sandbox user, mounted read-only
(never an environment variable, which `docker inspect` would show)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from agentvisor.config import Settings
from agentvisor.errors import SandboxError
from agentvisor.sandbox.sandbox_spec import token_file_path


def write_token_file(settings: Settings, project: str, role: str, token: str) -> Path:
    """`STATE/tokens/<project>/<role>.token`, mode 0400, owned by the sandbox user.

    A new file is written beside and renamed into place. An existing one is rewritten in place
    instead: a running sandbox has that very inode bind-mounted, and a rename would leave it
    reading the old token forever (the shim reads the file on every request).
    """
    token = token.strip()
    if not token or "\n" in token:
        raise SandboxError(f"the token for {role} is empty or not one line; register it again")
    path = token_file_path(settings, project, role)
    for folder in (settings.tokens_dir, path.parent):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    uid, gid = settings.sandbox_ids()
    as_root = os.getuid() == 0
    if not as_root and uid != os.getuid():
        raise SandboxError(
            f"the sandbox uid {uid} is not yours, so only root can hand it the token; unset "
            "sandbox_uid or run agentvisor as root"
        )
    data = f"{token}\n".encode()
    if path.is_file() and not path.is_symlink():
        os.chmod(path, 0o600)  # the owner (not root) needs write permission for a moment
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a symlink or other leftover: never write through it
        fd, tmp = tempfile.mkstemp(prefix=f".{role}.", suffix=".tmp", dir=path.parent)
        try:
            os.write(fd, data)
            os.fchmod(fd, 0o400)  # it appears complete, private and owned, or not at all
            if as_root:
                os.fchown(fd, uid, gid)
            os.fsync(fd)
            os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    os.chmod(path, 0o400)
    if as_root:
        os.chown(path, uid, gid)
    return path
