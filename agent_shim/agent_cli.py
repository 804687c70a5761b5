"""`agent`: what an agent runs to talk to agentvisor (check-ins, messages, completion).

Standard library only. Errors are one line on stderr: exit status 2 for a usage mistake,
1 when the server refuses or cannot be reached. Identity comes from the token file.
`agent hook KIND`, run by the agent CLI's hooks, is the exception: it always exits 0 at once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent_shim import receipts
from agent_shim.client import ApiClient, ClientError

ORCHESTRATOR = "orchestrator"
HOOK_TIMEOUT_S = 2.0  # a hook holds up the agent CLI (UserPromptSubmit blocks the prompt)


def resolve_target(target: str, team: Callable[[], Sequence[str]] = tuple) -> str:
    """A role name from a role or an old tmux target (`session:window[.pane]`): the session is
    ignored, window `0` or `orchestrator` is the orchestrator, window N the N-th agent of
    `agent team` (counting the orchestrator as 0, as the old windows were), any other window
    name a role. Old spellings with underscores or capitals are the role's (`qa_engineer` is
    `qa-engineer`). `team()` gives the roles in `agent team`'s order, asked only for N > 0."""
    name = target
    if ":" in target:
        window = target.split(":", 1)[1].split(".", 1)[0].strip().lower()
        if window in ("", "0", ORCHESTRATOR):
            return ORCHESTRATOR
        if window.isdigit():
            roles = list(team())
            index = int(window)
            if index >= len(roles):
                raise UsageError(
                    f"target {target!r}: window {index} has no agent (the team has "
                    f"{len(roles)}: {', '.join(roles) or 'none'}; 0 is the orchestrator)"
                )
            return roles[index]
        name = window
    return name.strip().lower().replace("_", "-")


def positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("minutes must be more than 0")
    return value


def text_or_stdin(value: str) -> str:
    """`-` means: read the text from standard input."""
    return sys.stdin.read() if value == "-" else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent", description="Talk to agentvisor: check-ins, messages, completion."
    )
    parser.add_argument("--json", action="store_true", help="print the server's JSON answer")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    checkin = commands.add_parser("checkin", help="schedule a check-in message")
    checkin.add_argument(
        "minutes", type=positive_minutes, metavar="MINUTES", help="in how many minutes"
    )
    checkin.add_argument("note", metavar="NOTE", help="what the check-in reminds of")
    checkin.add_argument(
        "--every",
        type=positive_minutes,
        metavar="MINUTES",
        help="repeat every MINUTES (at least 1)",
    )
    checkin.add_argument("--to", metavar="ROLE", help="whom to check in on (default: yourself)")

    send = commands.add_parser("send", help="send a message to another agent")
    send.add_argument("role", metavar="ROLE", help="the recipient's role, e.g. orchestrator")
    send.add_argument("message", metavar="MESSAGE", help="the text, or - to read stdin")

    done = commands.add_parser("done", help="report your task finished to the orchestrator")
    done.add_argument("summary", metavar="SUMMARY", help="what was done, or - to read stdin")

    commands.add_parser("inbox", help="your messages not delivered yet")
    commands.add_parser("team", help="the agents of your project")
    commands.add_parser("whoami", help="who the token says you are")

    event = commands.add_parser("event", help="record an event (for hooks)")
    event.add_argument("kind", metavar="KIND")
    event.add_argument(
        "data", nargs="?", metavar="JSON", help="event data as JSON, or - to read it from stdin"
    )

    hook = commands.add_parser(
        "hook", help="report an agent CLI hook (its JSON on stdin); always exits 0"
    )
    hook.add_argument("kind", metavar="KIND", help=", ".join(receipts.HOOK_EVENTS))
    return parser


def run_command(args: argparse.Namespace, client: ApiClient) -> Any:
    """Do what the parsed command line says; the server's answer."""
    if args.command == "checkin":
        to = resolve_target(args.to, lambda: _roles(client)) if args.to else None
        return client.checkin(args.minutes, args.note, to=to, every_minutes=args.every)
    if args.command == "send":
        return client.send(
            resolve_target(args.role, lambda: _roles(client)), text_or_stdin(args.message)
        )
    if args.command == "done":
        return client.done(text_or_stdin(args.summary))
    if args.command == "inbox":
        return client.inbox()
    if args.command == "team":
        return client.team()
    if args.command == "whoami":
        return client.whoami()
    if args.command == "event":
        return client.event(args.kind, parse_event_data(args.data))
    raise AssertionError(args.command)


def _roles(client: ApiClient) -> list[str]:
    """The team's roles in `agent team`'s order: the orchestrator first, as window 0 was."""
    roles = [str(a.get("role")) for a in client.team()]
    return sorted(roles, key=lambda role: role != ORCHESTRATOR)


def parse_event_data(raw: str | None) -> dict[str, Any] | None:
    """The event's data: a JSON object given as argument, or on stdin with `-` (as hooks
    receive it)."""
    if raw is None:
        return None
    text = sys.stdin.read() if raw == "-" else raw
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise UsageError(f"event data is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise UsageError('event data must be a JSON object, like \'{"tool": "Bash"}\'')
    return data


class UsageError(Exception):
    """A mistake in the command line found after parsing."""


def describe(args: argparse.Namespace, answer: Any) -> str:
    """One short human-readable text for the server's answer to the command in `args`."""
    command = args.command
    if command == "checkin":
        due = answer.get("due_at")
        when = time.strftime("%H:%M", time.localtime(due)) if isinstance(due, int | float) else "?"
        every_s = answer.get("every_s")
        every = answer.get("every_minutes") or (every_s / 60 if every_s else None)
        repeat = f", then every {every:g} min" if every else ""
        to = _shown(args.to) if args.to else "you"
        return f"check-in {answer.get('id', '?')} for {to} at {when}{repeat}"
    if command == "send":
        return f"message {answer.get('id', '?')} to {_shown(args.role)} " + str(
            answer.get("state", "queued")
        )
    if command == "done":
        if answer.get("recipient") == "operator":  # the orchestrator reports to the operator
            return "completion reported to the operator"
        return f"completion reported to the orchestrator (message {answer.get('id', '?')})"
    if command == "inbox":
        if not answer:
            return "no messages waiting"
        return "\n".join(
            f"{m.get('id')} {m.get('state')} from {m.get('sender')}: "
            f"{_first_line(str(m.get('body', '')))}"
            for m in answer
        )
    if command == "team":
        ordered = sorted(answer, key=lambda agent: agent.get("role") != ORCHESTRATOR)
        lines = [f"{n}  {_agent_line(agent)}" for n, agent in enumerate(ordered)]
        return "\n".join(lines) or "no agents"
    if command == "whoami":
        if answer.get("kind") == "agent":
            return f"{answer.get('role')} on project {answer.get('project')}"
        return str(answer.get("kind", "?"))
    if command == "event":
        return f"event {answer.get('kind', '?')} recorded"
    return json.dumps(answer)


def _shown(target: str) -> str:
    try:
        return resolve_target(target)
    except UsageError:  # a window number: the server's answer names the role
        return target


def _first_line(text: str, width: int = 80) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def _agent_line(agent: dict[str, Any]) -> str:
    details = [str(agent[key]) for key in ("state", "status", "profile") if agent.get(key)]
    return "  ".join([str(agent.get("role", "?")), *details])


def run_hook(
    kind: str,
    payload_text: str,
    env: Mapping[str, str],
    client: ApiClient,
    now: float,
) -> dict[str, Any]:
    """Record a hook call: a receipt for the shim (first: it is what delivery waits on), then
    the event `hook_<kind>` on the server, best effort. Never raises: a hook that fails or
    hangs would hold up the agent CLI."""
    try:
        payload = json.loads(payload_text) if payload_text.strip() else {}
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    kind = re.sub(r"[^a-z0-9_]", "_", kind.lower())[:30] or "unknown"
    line = receipts.receipt(kind, payload, now)
    path = env.get("AGENTVISOR_HOOK_RECEIPTS") or receipts.DEFAULT_RECEIPTS
    try:
        receipts.append(path, line)
    except OSError as error:
        print(f"agent hook: cannot write {path}: {error.strerror}", file=sys.stderr)
    try:
        client.event(f"hook_{kind}", line)
    except ClientError as error:
        print(f"agent hook: event not recorded: {error}", file=sys.stderr)
    return line


def hook_main(argv: Sequence[str]) -> int:
    kind = argv[0] if argv else "unknown"
    try:
        payload_text = sys.stdin.read() if not sys.stdin.isatty() else ""
    except (OSError, ValueError):
        payload_text = ""
    client = ApiClient.from_env()
    client.timeout_s = HOOK_TIMEOUT_S
    try:
        run_hook(kind, payload_text, os.environ, client, time.time())
    except Exception as error:  # a bug here must still not block the agent CLI
        print(f"agent hook: {type(error).__name__}: {error}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["hook"]:
        # Before argparse: a usage error exits 2, which Claude Code takes as "block the prompt".
        return hook_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        answer = run_command(args, ApiClient.from_env())
    except UsageError as error:
        print(f"agent: {error}", file=sys.stderr)
        return 2
    except ClientError as error:
        print(f"agent: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        print(describe(args, answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
