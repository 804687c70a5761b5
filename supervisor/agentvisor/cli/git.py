"""Git commands of the CLI: merge the agents' branches, and where each agent stands."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentvisor.cli.render import console, print_json, table, when
from agentvisor.client import ApiClient
from agentvisor.config import load_settings
from agentvisor.errors import GitError, InvalidInput
from agentvisor.lazy import lazy_module

if TYPE_CHECKING:
    from agentvisor.git import project_repo
else:  # GitPython: loaded by the commands that use it
    project_repo = lazy_module("agentvisor.git.project_repo")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _project_row(state: Path | None, project: str | None) -> dict[str, Any]:
    from agentvisor.launch import resolve_project

    with ApiClient(load_settings(state)) as client:
        return resolve_project(client, project)


def register(app: typer.Typer) -> None:
    @app.command()
    def merge(
        ctx: typer.Context,
        project: Annotated[str | None, typer.Argument()] = None,
        into: Annotated[
            str | None,
            typer.Option(
                "--into",
                help="Target branch: the integration branch (default) or the start branch.",
            ),
        ] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Report what would happen; change nothing.")
        ] = False,
        pr: Annotated[
            bool,
            typer.Option("--pr", help="Open a pull request from the integration branch with gh."),
        ] = False,
        json_out: JsonOpt = False,
    ) -> None:
        """Merge every agent's branch into the integration branch (never half-merged). Exits 1
        when any branch conflicts (the others are merged; the table lists every branch)."""
        from agentvisor.git.merging import INTEGRATION_BRANCH, merge_branches
        from agentvisor.git.worktrees import list_worktrees

        if pr and not dry_run:
            _require_gh()  # before anything is merged
        row = _project_row(ctx.obj.state, project)
        root = Path(row["path"])
        base = row["start_branch"] or project_repo.start_branch(root)
        branches = [w.branch for w in list_worktrees(root)]
        results = merge_branches(root, branches, base, into=into, dry_run=dry_run)
        if json_out:
            print_json([vars(r) for r in results])
        else:
            target = into or INTEGRATION_BRANCH
            table(
                f"merge into {target}{' (dry run)' if dry_run else ''}",
                ["branch", "result", "commit", "conflicting files"],
                (
                    [r.branch, r.status, (r.commit or "")[:10], ", ".join(r.conflicts)]
                    for r in results
                ),
            )
        conflicts = [r.branch for r in results if r.status == "conflict"]
        if conflicts:
            print(
                f"{len(conflicts)} branch(es) conflict and were left out: {', '.join(conflicts)}"
                " (merge them by hand, or have the agent rebase on the start branch)",
                file=sys.stderr,
            )
        if pr and not dry_run and not conflicts:
            _open_pr(root, base, into or INTEGRATION_BRANCH)
        if conflicts:
            raise typer.Exit(1)

    @app.command()
    def sync(
        ctx: typer.Context,
        project: Annotated[str | None, typer.Argument()] = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Per agent: commits ahead/behind the start branch and uncommitted changes."""
        from agentvisor.git.merging import sync_report
        from agentvisor.git.worktrees import list_worktrees

        row = _project_row(ctx.obj.state, project)
        root = Path(row["path"])
        base = row["start_branch"] or project_repo.start_branch(root)
        rows = sync_report(root, base, list_worktrees(root))
        if json_out:
            print_json([{**vars(r), "path": str(r.path)} for r in rows])
            return
        table(
            f"agents against {base}",
            ["role", "branch", "ahead", "behind", "uncommitted", "last commit", "problem"],
            (
                [
                    r.role,
                    r.branch,
                    r.ahead,
                    r.behind,
                    r.uncommitted,
                    f"{when(r.last_commit_at)} {r.last_commit_subject or ''}",
                    r.problem or "",
                ]
                for r in rows
            ),
        )


def _require_gh() -> None:
    if shutil.which("gh") is None:
        raise InvalidInput(
            "--pr needs the GitHub CLI 'gh' on PATH; install it or merge without --pr "
            "(nothing was merged)"
        )


def _open_pr(root: Path, base: str, head: str) -> None:
    for command in (
        ["git", "push", "-u", "origin", head],
        ["gh", "pr", "create", "--base", base, "--head", head, "--fill"],
    ):
        done = subprocess.run(command, cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            raise GitError(f"{' '.join(command[:3])} failed: {done.stderr.strip()[-500:]}")
        console.print(done.stdout.strip())
