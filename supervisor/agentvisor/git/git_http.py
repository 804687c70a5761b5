"""The agents' git channel: git's smart HTTP protocol on the project's repository, served by
the host API (`git http-backend`), the caller known by its token.

An agent fetches the start branch and the agents' branches (nothing else is advertised) and
pushes only `refs/heads/agent/<its role>`. Two checks stand between a push and the project's
refs: the request's ref updates are read here before git sees them (`check_updates`), and
agentvisor's own pre-receive hook (never the project's hooks) checks them again with the
objects at hand, for force-updates. The pure parts (routes, pkt-lines, rules) are apart from the
process handling (`run_backend`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agentvisor.errors import GitError, InvalidInput, NotFound, TooLarge

UPLOAD, RECEIVE = "git-upload-pack", "git-receive-pack"
ZERO_OIDS = ("0" * 40, "0" * 64)
MAX_COMMAND_BYTES = 256 * 1024  # the ref updates at the start of a push
_REPO_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\.git")
_OID = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
# A ref name as it may reach an event, a metric-free log line or the operator's terminal:
# printable ASCII only (git's own rules are stricter still; it checks them after us).
_REF_NAME = re.compile(r"refs/[!-~]{1,250}")
_PROTOCOL = re.compile(r"version=[0-2](:[a-z0-9=._-]+)*")
RULE_OWN_BRANCH = "own-branch-only"
RULE_FAST_FORWARD = "fast-forward-only"
RULE_NO_DELETE = "no-branch-deletion"
HOOK_NAME = "pre-receive"
POST_HOOK_NAME = "post-receive"
# After the refs moved: the updates that did happen, for the API to record (one line each).
POST_RECEIVE_HOOK = """#!/bin/sh
# agentvisor: note the updates git made, for the event log. Written by agentvisor.
if [ -n "$AGENTVISOR_UPDATES_FILE" ]; then
    cat >>"$AGENTVISOR_UPDATES_FILE"
else
    cat >/dev/null
fi
"""

# agentvisor's pre-receive hook: runs in receive-pack on the host, with the environment set by
# `backend_env`. The agent wrote none of it; the ref names it reads come from git.
PRE_RECEIVE_HOOK = """#!/bin/sh
# agentvisor: an agent may update only its own branch (docs/sandboxes.md). Written by
# agentvisor; the project's own hooks never run for an agent's push.
status=0
while read -r old new ref; do
    own="$AGENTVISOR_PUSH_REF"
    branch="${own#refs/heads/}"
    if [ -z "$own" ] || [ "$ref" != "$own" ]; then
        echo "agentvisor: refusing to update $ref: an agent may push only its own branch" \\
            "$branch (rule own-branch-only)" >&2
        status=1
        continue
    fi
    case "$new" in *[!0]*) ;; *)
        echo "agentvisor: refusing to delete $branch (rule no-branch-deletion)" >&2
        status=1
        continue ;;
    esac
    case "$old" in *[!0]*) ;; *) continue ;; esac
    if [ "$AGENTVISOR_ALLOW_FORCE_PUSH" != 1 ] && ! git merge-base --is-ancestor "$old" "$new"
    then
        echo "agentvisor: refusing to rewrite $branch: it would drop commits that are on it" \\
            "(rule fast-forward-only; the operator allows it with allow_force_push = true)" >&2
        status=1
    fi
done
exit $status
"""


@dataclass(frozen=True)
class GitRoute:
    """What one request of git's smart HTTP protocol asks for."""

    service: str  # git-upload-pack | git-receive-pack
    advertise: bool  # GET info/refs, else the POST of the service itself

    @property
    def path_info(self) -> str:
        return "/info/refs" if self.advertise else f"/{self.service}"


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str

    @property
    def deletes(self) -> bool:
        return self.new in ZERO_OIDS

    @property
    def creates(self) -> bool:
        return self.old in ZERO_OIDS


def parse_route(method: str, repo: str, rest: str, service: str | None) -> GitRoute:
    """The smart-HTTP request behind `/git/<repo>/<rest>`; NotFound for anything else (the
    dumb protocol's files included: nothing of the repository is served as a file)."""
    if not _REPO_SEGMENT.fullmatch(repo):
        raise NotFound(f"no repository {repo!r}: the project's is /git/project.git")
    if method == "GET" and rest == "info/refs":
        if service not in (UPLOAD, RECEIVE):
            raise InvalidInput(
                "only git's smart HTTP protocol is served: "
                "ask for info/refs?service=git-upload-pack or git-receive-pack"
            )
        return GitRoute(service, advertise=True)
    if method == "POST" and rest in (UPLOAD, RECEIVE):
        return GitRoute(rest, advertise=False)
    raise NotFound(f"{method} /git/{repo}/{rest} is not part of git's smart HTTP protocol")


def agent_ref(role: str) -> str:
    return f"refs/heads/agent/{role}"


def read_pkt_lines(data: bytes) -> tuple[list[bytes], bool]:
    """The pkt-lines at the start of `data` up to the first flush: (lines, flush seen)."""
    lines: list[bytes] = []
    at = 0
    while at + 4 <= len(data):
        try:
            size = int(data[at : at + 4], 16)
        except ValueError:
            raise InvalidInput("the push is not in git's pkt-line format") from None
        if size == 0:
            return lines, True
        if size < 4:
            raise InvalidInput("the push is not in git's pkt-line format")
        if at + size > len(data):
            break
        lines.append(data[at + 4 : at + size])
        at += size
    return lines, False


def ref_updates(lines: list[bytes]) -> list[RefUpdate]:
    """The `old new ref` commands of a receive-pack request (capabilities and shallow lines
    dropped); InvalidInput for anything else, a signed push included."""
    updates = []
    for raw in lines:
        line = raw.split(b"\0", 1)[0].rstrip(b"\n").decode("utf-8", "replace")
        if line.startswith("shallow "):
            continue
        if line.startswith("push-cert"):
            raise InvalidInput("signed pushes are not supported on the agents' git channel")
        parts = line.split(" ")
        if len(parts) != 3 or not (_OID.fullmatch(parts[0]) and _OID.fullmatch(parts[1])):
            raise InvalidInput(f"not a ref update of git's push protocol: {line[:100]!r}")
        if not _REF_NAME.fullmatch(parts[2]):
            raise InvalidInput(f"{parts[2][:100]!r} is not a ref name agentvisor accepts")
        updates.append(RefUpdate(*parts))
    return updates


def check_updates(updates: list[RefUpdate], role: str) -> dict[str, str]:
    """What is wrong with a push by `role`: ref -> the rule it breaks (empty: allowed).

    The fast-forward rule needs the objects, so the hook checks it; this is the part that can
    be told from the commands alone.
    """
    own = agent_ref(role)
    problems = {}
    for update in updates:
        if update.ref != own:
            problems[update.ref] = (
                f"refusing to update {update.ref}: an agent may push only its own branch "
                f"agent/{role} (rule {RULE_OWN_BRANCH})"
            )
        elif update.deletes:
            problems[update.ref] = f"refusing to delete agent/{role} (rule {RULE_NO_DELETE})"
    return problems


def pkt(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode() + data


def refusal_report(updates: list[RefUpdate], problems: Mapping[str, str], sideband: bool) -> bytes:
    """A receive-pack answer that refuses the whole push, as git shows it to the pusher:
    `! [remote rejected] REF (reason)` per ref and the reasons as `remote:` lines."""
    report = pkt(b"unpack ok\n")
    for update in updates:
        reason = problems.get(update.ref, "another update in this push was refused")
        short = reason.split(" (rule ", 1)[-1].rstrip(")") if update.ref in problems else reason
        report += pkt(f"ng {update.ref} {short}\n".encode())
    report += b"0000"
    if not sideband:
        return report
    messages = b"".join(pkt(b"\x02" + f"agentvisor: {p}\n".encode()) for p in problems.values())
    return messages + pkt(b"\x01" + report) + b"0000"


def install_hooks(folder: Path) -> Path:
    """Write agentvisor's hooks into `folder` (state dir, never mounted); return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in ((HOOK_NAME, PRE_RECEIVE_HOOK), (POST_HOOK_NAME, POST_RECEIVE_HOOK)):
        hook = folder / name
        if not hook.is_file() or hook.read_text() != text:
            temporary = folder / f".{name}.new"
            temporary.write_text(text)
            temporary.chmod(0o755)
            os.replace(temporary, hook)
    return folder


def applied_updates(text: str, role: str) -> list[RefUpdate]:
    """The updates the post-receive hook noted, those of `role`'s own branch only."""
    updates = []
    for line in text.splitlines():
        parts = line.split(" ")
        if (
            len(parts) == 3
            and _OID.fullmatch(parts[0])
            and _OID.fullmatch(parts[1])
            and parts[2] == agent_ref(role)
        ):
            updates.append(RefUpdate(*parts))
    return updates


def backend_env(
    *,
    git_dir: Path,
    route: GitRoute,
    role: str,
    start_branch: str,
    hooks_dir: Path,
    allow_force_push: bool,
    content_type: str | None,
    git_protocol: str | None,
) -> dict[str, str]:
    """The CGI environment for `git http-backend`, made from nothing inherited but PATH."""
    settings = [
        ("core.hooksPath", str(hooks_dir)),
        ("core.fsmonitor", "false"),
        ("http.uploadpack", "true"),
        ("http.receivepack", "true"),
        ("http.getanyfile", "false"),
        ("receive.fsckObjects", "true"),
        ("receive.denyDeletes", "true"),
        ("receive.denyNonFastForwards", "false" if allow_force_push else "true"),
        ("receive.autogc", "false"),
        ("receive.advertisePushOptions", "false"),
        ("uploadpack.allowFilter", "true"),
        ("safe.directory", str(git_dir)),
        ("safe.directory", str(git_dir.parent)),
        # Only the start branch and the agents' branches are shown (and can be fetched).
        ("uploadpack.hideRefs", "refs/"),
        ("uploadpack.hideRefs", "!refs/heads/agent/"),
        ("uploadpack.hideRefs", f"!refs/heads/{start_branch}"),
        ("uploadpack.hideRefs", "HEAD"),
        ("receive.hideRefs", "refs/"),
        ("receive.hideRefs", f"!{agent_ref(role)}"),
    ]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "GIT_PROJECT_ROOT": str(git_dir),
        "GIT_HTTP_EXPORT_ALL": "1",
        "GIT_CEILING_DIRECTORIES": str(git_dir.parent.parent),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "PATH_INFO": route.path_info,
        "REQUEST_METHOD": "GET" if route.advertise else "POST",
        "QUERY_STRING": f"service={route.service}" if route.advertise else "",
        "REMOTE_USER": role,
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": content_type or "",
        "AGENTVISOR_PUSH_REF": agent_ref(role),
        "AGENTVISOR_ALLOW_FORCE_PUSH": "1" if allow_force_push else "0",
        "GIT_CONFIG_COUNT": str(len(settings)),
    }
    for index, (key, value) in enumerate(settings):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    if git_protocol and _PROTOCOL.fullmatch(git_protocol):
        env["GIT_PROTOCOL"] = git_protocol
    return env


@dataclass
class BackendReply:
    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]


async def spool_body(
    chunks: AsyncIterator[bytes], limit_bytes: int, gzipped: bool
) -> tuple[BinaryIO, int]:
    """The whole request body, decompressed, in a temporary file (at its start), with its
    size; InvalidInput once over `limit_bytes`.

    Read in full before git starts: the server may read the client's messages while it
    streams the answer, so a body still being read then could lose its end.
    """
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who closes it
    size = 0
    try:
        async for chunk in chunks:
            try:
                data = inflater.decompress(chunk) if inflater else chunk
            except zlib.error:
                raise InvalidInput("the request body is not valid gzip") from None
            size += len(data)
            if size > limit_bytes:
                raise TooLarge(
                    f"the request is over the {limit_bytes // (1024 * 1024)} MiB limit "
                    "(setting max_push_mb); push smaller commits"
                )
            spool.write(data)
        if inflater:
            tail = inflater.flush()
            size += len(tail)
            spool.write(tail)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, size


def read_push(spool: BinaryIO, role: str) -> Push:
    """A push's ref updates, read from the spooled body before git sees them, judged for
    `role`; the file is left at its start."""
    start = spool.read(MAX_COMMAND_BYTES)
    spool.seek(0)
    lines, flushed = read_pkt_lines(start)
    if not flushed:
        raise InvalidInput("the push names no ref updates (no flush-pkt after the commands)")
    updates = ref_updates(lines)
    capabilities = lines[0].split(b"\0", 1)[1].split() if lines and b"\0" in lines[0] else []
    return Push(updates, check_updates(updates, role), b"side-band-64k" in capabilities)


@dataclass
class Push:
    """A push's ref updates, read before git sees them, and what is wrong with them."""

    updates: list[RefUpdate]
    problems: dict[str, str]
    sideband: bool


async def run_backend(
    env: Mapping[str, str], stdin: BinaryIO | None, length: int = 0
) -> BackendReply:
    """Run `git http-backend` on the spooled request body `stdin` and return its CGI status
    and headers, with the rest of its output as a stream."""
    process = await asyncio.create_subprocess_exec(
        "git",
        "http-backend",
        env={**env, "CONTENT_LENGTH": str(length)} if stdin is not None else dict(env),
        stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd="/",
    )
    assert process.stdout and process.stderr
    errors = asyncio.create_task(process.stderr.read(64 * 1024))
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) <= 65536:
        chunk = await process.stdout.read(65536)
        if not chunk:
            break
        head += chunk
    separator = b"\r\n\r\n" if b"\r\n\r\n" in head else b"\n\n"
    header_text, _, rest = head.partition(separator)
    if not header_text:
        await process.wait()
        error = (await errors).decode("utf-8", "replace").strip()
        raise GitError(f"git http-backend answered nothing: {error or 'no reason given'}")
    status, headers = 200, {}
    for line in header_text.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split(" ", 1)[0] or 500)
        elif name.strip():
            headers[name.strip()] = value.strip()

    async def stream() -> AsyncIterator[bytes]:
        assert process.stdout
        try:
            if rest:
                yield rest
            while chunk := await process.stdout.read(65536):
                yield chunk
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await process.wait()
            errors.cancel()

    return BackendReply(status, headers, stream())
