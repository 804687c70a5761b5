"""The sandbox repository boundary (issue 11), attacked for real.

Each test runs one attack from inside a real sandbox of a running demo team, as the sandbox's
user (`attacks_inside.py`), then runs what the operator and agentvisor run on the host
(`agentvisor merge`, `merge --dry-run`, `sync`, `git status`, `git log`, `git fetch`, fetch from
the agent's folder, `down`, `resume`, `destroy`...) and looks at the host: the marker a planted
command would write must not exist, the project's refs must not move (but the attacker's own
branch), nothing in the project's .git may change. The attacker is the developer.

One team serves the module; tests run in file order, the ones that stop or remove it last.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

from agentvisor import launch
from agentvisor.client import ApiClient
from agentvisor.errors import AgentvisorError
from tests.security.conftest import TAG, Snapshot, Team, running_team

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ATTACKER = "developer"
OTHER = "tester"


def _refused(push: dict, *rules: str) -> str | None:
    """Why `push` (one entry of an attack's report) is not a refusal naming one of `rules`."""
    if push["status"] is None:
        return f"{push['refspecs']}: the agent has no remote to publish through"
    output = push["output"]
    named = any(f"(rule {rule}" in output for rule in rules)
    if push["status"] == 0 or "[remote rejected]" not in output or not named:
        return f"{push['refspecs']}: not refused with the rule {'/'.join(rules)}: {output.strip()}"
    return None


# --- the project's repository is out of reach ---------------------------------------------


def test_project_git_dir_is_not_chowned_to_the_sandbox_uid(team: Team):
    assert not team.owned_by_others()[:20], "the project's .git was handed to another uid"
    if os.getuid() == 0:
        for role in team.roles:
            uid = team.sandbox_uid(role)
            with pytest.raises(KeyError):
                account = pwd.getpwuid(uid)
                pytest.fail(f"{role} runs as uid {uid}, the host account {account.pw_name}")


def test_project_git_dir_is_not_writable_from_the_sandbox(team: Team):
    git_dir = team.root / ".git"
    inodes = {
        f"{st.st_dev}:{st.st_ino}" for st in (p.lstat() for p in [git_dir, *git_dir.rglob("*")])
    }
    problems = []
    for role in (ATTACKER, OTHER):
        probe = team.attack(
            role, "probe_project_git", inodes=sorted(inodes), project=str(team.root)
        )
        writable = [hit["path"] for hit in probe["hits"] if hit["writable"]]
        if writable:
            problems.append(f"{role} can write the project's .git at {writable[:10]}")
        if probe["mounts"]:
            problems.append(f"{role} has the project's .git mounted: {probe['mounts']}")
        for mount in team.bind_mounts(role):
            source = Path(mount["Source"])
            near_project = source.is_relative_to(team.root.parent) and not source.is_relative_to(
                team.settings.state_dir
            )
            if near_project and (source, mount["Destination"]) != (
                team.clones[role],
                "/workspace",
            ):
                problems.append(
                    f"{role} mounts {source} at {mount['Destination']} "
                    f"({'rw' if mount['RW'] else 'ro'}): only its clone at /workspace may be"
                )
    # Hard links: no file of the project's .git is also a file of an agent's folder.
    clone_inodes = {
        (st.st_dev, st.st_ino): path
        for clone in team.clones.values()
        for path in clone.rglob("*")
        if not (st := path.lstat()).st_mode & 0o040000
    }
    shared = [
        f"{path} = {clone_inodes[(st.st_dev, st.st_ino)]}"
        for path in git_dir.rglob("*")
        if (st := path.lstat()).st_nlink > 1 and (st.st_dev, st.st_ino) in clone_inodes
    ]
    if shared:
        problems.append(f"hard links between the project's .git and a clone: {shared[:10]}")
    assert not problems, "\n".join(problems)


# --- the agents' work still flows ----------------------------------------------------------


def test_agent_commit_reaches_its_branch_in_the_project(team: Team):
    subjects = team.git("log", "--format=%s", f"refs/heads/agent/{ATTACKER}").stdout
    assert f"demo: {ATTACKER} work" in subjects  # the demo agent's own commit
    commit = team.commit(ATTACKER, "legit")
    assert team.wait_published(ATTACKER, commit, timeout_s=10), (
        f"the commit {commit} never reached agent/{ATTACKER} in the project"
    )


def test_a_large_commit_reaches_its_branch_in_the_project(team: Team):
    """A push whose pack spans many reads (4 MiB that do not compress) gets through whole."""
    status, out, err = team.exec(
        ATTACKER,
        "sh",
        "-c",
        "head -c 4194304 /dev/urandom > large.bin && git add large.bin && git commit -qm large",
    )
    assert status == 0, out + err
    commit = team.inside_head(ATTACKER)
    assert team.wait_published(ATTACKER, commit, timeout_s=30), (
        f"the large commit {commit} never reached agent/{ATTACKER} in the project"
    )


def test_second_agent_can_fetch_the_first_agents_branch(team: Team):
    for branch in (f"agent/{ATTACKER}", team.start):
        status, out = team.inside_git(OTHER, "fetch", "origin", branch)
        assert status == 0, f"{OTHER} cannot fetch {branch}: {out}"
        fetched = team.inside_git(OTHER, "rev-parse", "FETCH_HEAD")[1]
        assert fetched == team.ref(f"refs/heads/{branch}")


def test_merge_builds_the_integration_branch_and_sync_shows_ahead(team: Team):
    merged = team.cli("merge", "--json")
    assert merged.returncode == 0, merged.stderr
    results = {r["branch"]: r for r in json.loads(merged.stdout)}
    assert results[f"agent/{ATTACKER}"]["status"] == "merged", results
    integration = team.ref("refs/heads/agentvisor/integration")
    for role in (ATTACKER, OTHER):
        tip = team.ref(f"refs/heads/agent/{role}")
        assert team.git("merge-base", "--is-ancestor", tip, integration).returncode == 0
    synced = team.cli("sync", "--json")
    assert synced.returncode == 0, synced.stderr
    rows = {r["role"]: r for r in json.loads(synced.stdout)}
    assert rows[ATTACKER]["ahead"] >= 2 and rows[ATTACKER]["behind"] == 0, rows[ATTACKER]


# --- refs that are not the agent's ---------------------------------------------------------

FOREIGN_REFS = {
    "start-branch": lambda t: f"refs/heads/{t.start}",
    "other-agents-branch": lambda t: f"refs/heads/agent/{OTHER}",
    "tag": lambda t: f"refs/tags/{TAG}",
    "new-tag": lambda t: "refs/tags/forged",
    "integration-branch": lambda t: "refs/heads/agentvisor/integration",
    "look-alike-branch": lambda t: f"refs/heads/agent/{ATTACKER}-2",
    "replace-ref": lambda t: f"refs/replace/{t.ref(t.start)}",
    "notes": lambda t: "refs/notes/commits",
}
DELETED_REFS = {
    "start-branch": lambda t: f"refs/heads/{t.start}",
    "other-agents-branch": lambda t: f"refs/heads/agent/{OTHER}",
    "tag": lambda t: f"refs/tags/{TAG}",
    "own-branch": lambda t: f"refs/heads/agent/{ATTACKER}",
}


@pytest.mark.parametrize("target", FOREIGN_REFS)
def test_update_ref_and_push_of_a_ref_not_its_own(team: Team, before: Snapshot, target: str):
    ref = FOREIGN_REFS[target](team)
    report = team.attack(ATTACKER, "update_ref", ref=ref)
    assert report["written"], (
        f"the attack landed nowhere, not even in the agent's own repository: {report}"
    )
    assert team.ref(ref) == before.refs.get(ref), f"{ref} moved in the project"
    assert not (why := _refused(report["pushes"][0], "own-branch-only")), why
    team.assert_untouched(before, ATTACKER)


@pytest.mark.parametrize("target", DELETED_REFS)
def test_deletion_of_a_ref_is_refused(team: Team, before: Snapshot, target: str):
    ref = DELETED_REFS[target](team)
    start_point = team.inside_head(ATTACKER)
    try:
        report = team.attack(ATTACKER, "update_ref", ref=ref, delete=True)
    finally:  # the agent's own repository gets its branch back
        team.inside_git(ATTACKER, "update-ref", f"refs/heads/agent/{ATTACKER}", start_point)
    assert team.ref(ref) == before.refs[ref], f"{ref} was deleted in the project"
    # Its own branch: a rule of its own for deleting it (the others are not its own at all).
    rules = ("no-branch-deletion",) if target == "own-branch" else ("own-branch-only",)
    assert not (why := _refused(report["pushes"][0], *rules)), why
    team.assert_untouched(before, ATTACKER)


def test_packed_refs_forging_the_start_branch(team: Team, before: Snapshot):
    report = team.attack(ATTACKER, "packed_refs", start=team.start, other=OTHER, tag=TAG)
    assert report["written"], report
    refusals = [why for push in report["pushes"] if (why := _refused(push, "own-branch-only"))]
    appeared = team.run_host_commands(ATTACKER)
    team.assert_untouched(before, ATTACKER, appeared)
    assert not refusals, refusals


def test_reflog_deletion_leaves_the_projects_reflogs_intact(team: Team, before: Snapshot):
    assert f"refs/heads/{team.start}" in before.reflogs
    assert team.attack(ATTACKER, "reflog_deletion")["written"]
    appeared = team.run_host_commands(ATTACKER)
    assert not (damaged := team.damaged_reflogs(before)), f"reflogs lost or cut: {damaged}"
    team.assert_untouched(before, ATTACKER, appeared)


def test_force_push_of_own_branch_is_allowed_and_recorded_by_default(team: Team, before: Snapshot):
    first = team.commit(ATTACKER, "before-rewrite")
    assert team.wait_published(ATTACKER, first)
    report = team.attack(ATTACKER, "force_push")
    rewritten = report["head"]
    assert team.inside_git(ATTACKER, "merge-base", "--is-ancestor", first, rewritten)[0] == 1
    assert team.wait_published(ATTACKER, rewritten), report
    with ApiClient(team.settings) as client:
        events = client.get("/v1/events", project=team.project, limit=1000)
    updates = [e["data"] for e in events if e["kind"] in ("git.branch_updated", "branch_updated")]
    # The shim publishes too (its push or the agent's may lose the race for the ref's lock),
    # maybe the reset before the new commit: one forced update drops `first`.
    forced = [u for u in updates if u.get("old") == first and u.get("forced") is True]
    assert forced, f"no branch_updated event with forced true from {first}: {updates[:5]}"
    assert forced[0]["role"] == ATTACKER
    assert forced[0]["ref"] == f"refs/heads/agent/{ATTACKER}"
    team.assert_untouched(before, ATTACKER)


# --- content an agent publishes ------------------------------------------------------------


def test_symlinks_to_the_project_git_and_host_files_committed_and_merged(
    team: Team, before: Snapshot
):
    passwd = Path("/etc/passwd").read_bytes()
    tracked = {p: p.read_bytes() for p in team.root.iterdir() if p.is_file()}
    start_point = team.inside_head(ATTACKER)

    def merged_checkout_is_safe() -> None:
        assert Path("/etc/passwd").read_bytes() == passwd
        assert {p: p.read_bytes() for p in tracked} == tracked, "the project's files changed"
        links = sorted(team.root.glob("link-*"))
        assert links, "the merge into the start branch brought no symlinks"
        assert all(p.is_symlink() for p in links), [p for p in links if not p.is_symlink()]

    try:
        report = team.attack(ATTACKER, "symlinks", project=str(team.root))
        assert team.wait_published(ATTACKER, report["head"]), "the symlinks were not published"
        appeared = team.run_host_commands(ATTACKER)
        appeared.update(team.merged_into_start(merged_checkout_is_safe))
        team.assert_untouched(before, ATTACKER, appeared)
    finally:
        team.reset_agent(ATTACKER, start_point)


GITMODULES_URLS = {
    "ext": "ext::sh -c touch% {mark}",
    "upload-pack": "--upload-pack=touch {mark}",
}


@pytest.mark.parametrize("kind", GITMODULES_URLS)
def test_gitmodules_with_a_command_url_committed_and_merged(
    team: Team, before: Snapshot, kind: str
):
    mark = team.marker(f"gitmodules-{kind}")
    start_point = team.inside_head(ATTACKER)
    try:
        url = GITMODULES_URLS[kind].format(mark=mark)
        report = team.attack(ATTACKER, "gitmodules", url=url, mark=mark)
        team.wait_published(ATTACKER, report["head"], timeout_s=5)  # fsck may refuse it
        appeared = team.run_host_commands(ATTACKER)
        appeared.update(team.merged_into_start())
        team.assert_untouched(before, ATTACKER, appeared)
    finally:
        team.reset_agent(ATTACKER, start_point)


# --- configuration, attributes, hooks an agent can reach -------------------------------------


def _planted_attack(
    team: Team, before: Snapshot, attack: str, planted: str, merge: bool = True
) -> None:
    """Run `attack` (it plants a command writing its marker; `planted` is part of a path it
    must have written), then every host command; the planted command must never have run on
    the host."""
    start_point = team.inside_head(ATTACKER)
    try:
        report = team.attack(ATTACKER, attack, mark=team.marker(attack))
        assert any(planted in path for path in report["written"]), f"nothing planted: {report}"
        if report.get("head"):
            team.wait_published(ATTACKER, report["head"], timeout_s=5)
        appeared = team.run_host_commands(ATTACKER)
        if merge:
            appeared.update(team.merged_into_start())
        team.assert_untouched(before, ATTACKER, appeared)
    finally:
        if merge:
            team.reset_agent(ATTACKER, start_point)


def test_info_attributes_with_a_filter_driver(team: Team, before: Snapshot):
    _planted_attack(team, before, "info_attributes", "/info/attributes")


def test_objects_info_alternates(team: Team, before: Snapshot):
    _planted_attack(team, before, "alternates", "/objects/info/alternates")


def test_hooks_in_the_agents_own_repository_never_run_on_the_host(team: Team, before: Snapshot):
    _planted_attack(team, before, "hooks", "/hooks/post-checkout")


def test_command_settings_in_every_git_config_the_agent_can_reach(team: Team, before: Snapshot):
    _planted_attack(team, before, "config_commands", "/.git/config")


def test_commondir_redirect_to_an_agent_folder_with_fsmonitor(team: Team, before: Snapshot):
    _planted_attack(team, before, "commondir", "/commondir")


def test_dot_git_of_the_agents_folder_redirected_to_a_git_dir_with_fsmonitor(
    team: Team, before: Snapshot
):
    try:
        _planted_attack(team, before, "dot_git_redirect", "/.evil-gitdir/config", merge=False)
    finally:
        team.attack(ATTACKER, "undo_dot_git_redirect")


def test_fifo_in_the_agents_repository_does_not_hang_sync(team: Team, before: Snapshot):
    """`sync` reads the agent's clone (its uncommitted files): a FIFO where git expects a file
    must not block the operator's command forever."""
    try:
        team.attack(ATTACKER, "fifos")
        started = time.monotonic()
        try:
            synced = team.cli_within(30, "sync", "--json")
        except subprocess.TimeoutExpired:
            pytest.fail("agentvisor sync still blocks on the agent's FIFO after 30 s")
        team.log.append(f"sync: {synced.returncode} in {time.monotonic() - started:.1f} s")
        team.assert_untouched(before, ATTACKER)
    finally:
        team.attack(ATTACKER, "undo_fifos")


def test_a_spec_in_a_repository_the_agent_planted_in_its_folder_runs_nothing_when_planned(
    team: Team, before: Snapshot
):
    """The operator plans a spec an agent wrote in a repository of its own in its folder:
    discovery (GitPython) must refuse it before reading it, and run none of its git. (Here
    the sandbox's uid owns that repository, so git's own ownership check would stop a git
    run there too; test_host_git_reading_attacks.py runs it with the operator's uid, as with
    `sandbox_uid` set to it.)"""
    nested = team.clones[ATTACKER] / "plans"
    try:
        report = team.attack(ATTACKER, "planted_repository", mark=team.marker("planted-repo"))
        assert any("/plans/.git/config" in path for path in report["written"]), report
        appeared = team.run_commands(
            [
                ("agentvisor plan SPEC", lambda: team.cli("plan", str(nested / "next.md"))),
                (
                    "agentvisor plan --json SPEC",
                    lambda: team.cli("plan", "--json", str(nested / "next.md")),
                ),
            ]
        )
        team.assert_untouched(before, ATTACKER, appeared)
        planned = team.cli("plan", str(nested / "next.md"))
        assert "agent's worktree of" in planned.stdout + planned.stderr, planned.stdout
    finally:
        team.attack(ATTACKER, "undo_planted_repository")


# --- stopping, resuming and removing the team (last: they change the team) ------------------

PLANTED = ("config_commands", "hooks", "info_attributes", "alternates", "commondir")


def test_planted_commands_never_run_across_down_resume_destroy(team: Team, before: Snapshot):
    for attack in PLANTED:
        assert team.attack(ATTACKER, attack, mark=team.marker(f"lifecycle-{attack}"))["written"]
    steps = [
        ("agentvisor down", lambda: launch.down(team.settings, team.project)),
        ("agentvisor resume", lambda: launch.resume(team.settings, team.project)),
        ("agentvisor sync (resumed)", lambda: team.cli("sync", "--json")),
        ("agentvisor merge --dry-run (resumed)", lambda: team.cli("merge", "--dry-run")),
        (
            "agentvisor destroy",
            lambda: launch.destroy(team.settings, team.project, remove_worktrees=True),
        ),
        ("git status (destroyed)", lambda: team.git("status")),
    ]
    appeared: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    seen = set(os.listdir(team.markers))
    mounts: dict[str, list[dict]] = {}
    for label, step in steps:
        try:
            step()
        except AgentvisorError as error:  # go on: the later steps must be safe all the same
            failed[label] = error.message
        if label == "agentvisor resume" and label not in failed:
            mounts = {role: team.bind_mounts(role) for role in team.roles}
        if new := sorted(set(os.listdir(team.markers)) - seen):
            appeared[label] = new
            seen.update(new)
    assert not appeared, f"planted commands ran on the host: {appeared}"
    assert not failed, f"operator commands failed: {failed}"
    for role, binds in mounts.items():
        for mount in binds:
            source = Path(mount["Source"])
            assert not source.is_relative_to(team.root), f"{role} re-mounted {source}"
            if source.is_relative_to(team.clones[role]):
                assert (source, mount["Destination"]) == (team.clones[role], "/workspace")
    assert not team.owned_by_others()[:20], "the project's .git is owned by another uid"
    team.assert_untouched(before, ATTACKER, appeared)


def test_project_git_dir_is_not_chowned_to_the_sandbox_uid_after_destroy(team: Team):
    launch.destroy(team.settings, team.project, remove_worktrees=True)
    assert not team.owned_by_others()[:20], "the project's .git stays with another uid"


# --- a setting that forbids rewriting one's own branch --------------------------------------


def test_force_push_of_own_branch_is_refused_when_forbidden():
    with running_team(("developer",), {"AGENTVISOR_ALLOW_FORCE_PUSH": "false"}) as strict:
        first = strict.commit(ATTACKER, "before-rewrite")
        assert strict.wait_published(ATTACKER, first)
        report = strict.attack(ATTACKER, "force_push")
        rewritten = report["head"]
        assert strict.inside_git(ATTACKER, "merge-base", "--is-ancestor", first, rewritten)[0] == 1
        assert not (why := _refused(report["pushes"][0], "fast-forward-only")), why
        # Neither that push nor the shim's own publishing may rewrite the branch.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert strict.ref(f"refs/heads/agent/{ATTACKER}") == first
            time.sleep(0.1)
