"""The `/git/` routes of the host API: the agents' git channel (see agentvisor.git.git_http).

An agent's token says which project and which branch it may push; the operator's token has
no use here (the operator's git works on the project directly).
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from agentvisor.errors import AgentvisorError, Forbidden, InvalidInput, TooLarge, Unauthorized
from agentvisor.git.git_http import (
    RECEIVE,
    Push,
    applied_updates,
    backend_env,
    install_hooks,
    parse_route,
    read_push,
    refusal_report,
    run_backend,
    spool_body,
)
from agentvisor.git.git_run import is_ancestor
from agentvisor.git.refs import git_common_dir
from agentvisor.server.auth import Authenticator, Caller
from agentvisor.server.service import Service
from agentvisor.store.database import Row

REALM = 'Basic realm="agentvisor git channel", charset="UTF-8"'


def bearer_from(authorization: str | None) -> str | None:
    """`Authorization` as the bearer form the authenticator reads: git's credential helper
    sends the token as the Basic password, the shim sends it as a bearer token."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return authorization
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized(
            "malformed Basic credentials: the password must be the agent's token"
        ) from None
    return f"Bearer {decoded.partition(':')[2]}"


def git_router(service: Service, auth: Authenticator) -> APIRouter:
    router = APIRouter()
    settings = service.settings
    hooks_dir = install_hooks(settings.git_hooks_dir)

    def _caller(request: Request) -> Caller:
        return auth.caller(bearer_from(request.headers.get("authorization")))

    def _git_dir(project: Row) -> Path:
        if not project["path"]:
            raise Forbidden(f"project '{project['name']}' has no repository")
        return git_common_dir(Path(project["path"]))

    @router.api_route("/git/{repo}/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
    async def git_channel(repo: str, rest: str, request: Request) -> Response:
        try:
            who = await run_in_threadpool(_caller, request)
        except Unauthorized as exc:
            return Response(
                f"{exc.message}\n", status_code=401, headers={"WWW-Authenticate": REALM}
            )
        try:
            return await _serve(who, repo, rest, request)
        except AgentvisorError as exc:
            return Response(f"agentvisor: {exc.message}\n", status_code=exc.status)

    async def _serve(who: Caller, repo: str, rest: str, request: Request) -> Response:
        agent = who.require_agent()
        route = parse_route(request.method, repo, rest, request.query_params.get("service"))
        project = await run_in_threadpool(service.store.get_project_by_id, agent["project_id"])
        git_dir = await run_in_threadpool(_git_dir, project)
        role = str(agent["role"])
        env = backend_env(
            git_dir=git_dir,
            route=route,
            role=role,
            start_branch=str(project["start_branch"] or "main"),
            hooks_dir=hooks_dir,
            allow_force_push=settings.allow_force_push,
            content_type=request.headers.get("content-type"),
            git_protocol=request.headers.get("git-protocol"),
        )
        if route.advertise:
            reply = await run_backend(env, None)
            return StreamingResponse(reply.body, reply.status, reply.headers)
        limit = settings.max_push_mb * 1024 * 1024
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise TooLarge(
                f"a push of {length} bytes is over the {settings.max_push_mb} MiB limit "
                "(setting max_push_mb)"
            )
        encoding = (request.headers.get("content-encoding") or "").lower()
        if encoding not in ("", "identity", "gzip", "x-gzip"):
            raise InvalidInput(f"unsupported Content-Encoding {encoding!r}: use gzip or none")
        spool, size = await spool_body(request.stream(), limit, gzipped="gzip" in encoding)
        with spool:
            if route.service != RECEIVE:
                reply = await run_backend(env, spool, size)
                return StreamingResponse(reply.body, reply.status, reply.headers)
            push = read_push(spool, role)
            if push.problems:
                await run_in_threadpool(_record_refusal, project, agent, push)
                return Response(
                    refusal_report(push.updates, push.problems, push.sideband),
                    media_type="application/x-git-receive-pack-result",
                    headers={"Cache-Control": "no-cache"},
                )
            root = Path(project["path"])
            notes_fd, notes_name = tempfile.mkstemp(prefix="push-", dir=hooks_dir.parent)
            os.close(notes_fd)
            notes = Path(notes_name)
            env["AGENTVISOR_UPDATES_FILE"] = str(notes)
            reply = await run_backend(env, spool, size)

        async def then_record() -> AsyncIterator[bytes]:
            try:
                async for chunk in reply.body:
                    yield chunk
            finally:
                await run_in_threadpool(_record_updates, project, agent, root, notes)

        return StreamingResponse(then_record(), reply.status, reply.headers)

    def _record_refusal(project: Row, agent: Row, push: Push) -> None:
        for ref, reason in push.problems.items():
            rule = reason.rsplit("(rule ", 1)[-1].rstrip(")")
            service.store.log_event(
                "git.push_refused",
                project["id"],
                agent["id"],
                {"role": agent["role"], "ref": ref, "rule": rule, "reason": reason},
            )
            service.metrics.inc(f'git_push_refusals|rule="{rule}"')

    def _record_updates(project: Row, agent: Row, root: Path, notes: Path) -> None:
        """One event per update git made, as its post-receive hook noted them: a push that
        lost a race for the ref lock records nothing."""
        role = str(agent["role"])
        try:
            text = notes.read_text(encoding="utf-8", errors="replace")[:65536]
        finally:
            notes.unlink(missing_ok=True)
        for update in applied_updates(text, role):
            old = None if update.creates else update.old
            forced = old is not None and not is_ancestor(root, old, update.new)
            data: dict[str, Any] = {
                "role": role,
                "ref": update.ref,
                "old": old,
                "new": update.new,
                "forced": forced,
            }
            service.store.log_event("git.branch_updated", project["id"], agent["id"], data)
            service.metrics.inc(f'git_branch_updates|forced="{str(forced).lower()}"')

    return router
