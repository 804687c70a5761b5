"""Fixtures for the attack suites: a real demo team brought up with `launch.up`, attacks run
inside its sandboxes, and the host as the operator sees it (their own git and `agentvisor` CLI
in the project) before and after.

The operator's environment is clean: no GIT_* or AGENTVISOR_* variables (agentvisor's own
processes may set some), a home of its own whose .gitconfig holds only an identity and the
`safe.directory` line the old docs advised for the project.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentvisor import launch
from agentvisor.config import Settings, load_settings
from agentvisor.server import server_control
from tests.conftest import require
from tests.helpers import docker_answers, git, make_repo, sandbox_test_image, wait_until

REPO = Path(__file__).resolve().parents[2]
INSIDE = (Path(__file__).parent / "attacks_inside.py").read_text(encoding="utf-8")
SPEC = """# Greeting library

Build a small Python library that formats friendly greetings for a list of names, with unit
tests and a short README. Keep it dependency free.
"""
TAG = "v1.0"
# Files of a git dir that git itself rewrites as it works; everything else in the project's
# .git (config, commondir, info/, hooks/, objects/info/, worktrees' records...) must not change.
_CHURN = {"index", "FETCH_HEAD", "ORIG_HEAD", "AUTO_MERGE", "COMMIT_EDITMSG", "MERGE_RR", "gc.log"}
_SEMANTIC = {"refs", "packed-refs", "logs"}  # compared as refs and reflogs instead


@dataclass(frozen=True)
class Snapshot:
    """What the host looked like before an attack."""

    refs: dict[str, str]
    packed_refs: bytes | None
    control: dict[str, tuple[Any, ...]]
    reflogs: dict[str, bytes]
    owner: tuple[int, int]  # of the project's .git: restored files get it too
    markers: frozenset[str]


@dataclass
class Team:
    """A running demo team and the operator's view of its project."""

    settings: Settings
    project: str
    root: Path
    start: str
    roles: tuple[str, ...]
    clones: dict[str, Path]
    markers: Path
    home: Path
    log: list[str] = field(default_factory=list)
    attacker: str = "developer"  # the role the attacks run in

    # --- inside a sandbox ----------------------------------------------------------------
    def container(self, role: str) -> Any:
        import docker

        return docker.from_env().containers.get(f"agentvisor-{self.project}-{role}")

    def exec(
        self, role: str, *argv: str, env: dict[str, str] | None = None, timeout_s: int = 60
    ) -> tuple[int, str, str]:
        """Run `argv` in the sandbox of `role` as its own user, in /workspace (killed after
        `timeout_s`: status 124)."""
        container = self.container(role)
        user = container.attrs["Config"].get("User") or None
        result = container.exec_run(
            ["timeout", "-s", "KILL", str(timeout_s), *argv],
            user=user or "",
            workdir="/workspace",
            environment=env,
            demux=True,
        )
        out, err = result.output
        return (
            result.exit_code,
            (out or b"").decode(errors="replace"),
            (err or b"").decode(errors="replace"),
        )

    def attack(self, role: str, name: str, **params: Any) -> dict[str, Any]:
        """Run one attack of attacks_inside.py in the sandbox of `role`; what it reports."""
        status, out, err = self.exec(role, "python3", "-c", INSIDE, name, json.dumps(params))
        lines = out.strip().splitlines()
        if status != 0 or not lines:
            raise AssertionError(f"attack {name} did not run in {role}: {status} {out} {err}")
        report: dict[str, Any] = json.loads(lines[-1])
        self.log.append(f"attack {name} in {role}: {json.dumps(report)[:3000]}")
        return report

    def inside_git(self, role: str, *args: str) -> tuple[int, str]:
        status, out, err = self.exec(role, "git", *args)
        return status, (out + err).strip()

    def inside_head(self, role: str) -> str:
        return self.inside_git(role, "rev-parse", "HEAD")[1]

    def marker(self, name: str) -> str:
        """The host path a planted command of attack `name` writes (nothing mounts it)."""
        return str(self.markers / f"marker-{name}")

    # --- the operator on the host --------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "AGENTVISOR_"))}
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            GIT_CONFIG_NOSYSTEM="1",
            GIT_TERMINAL_PROMPT="0",
            # This checkout's agentvisor (supervisor/), whatever the venv's editable install
            # points at, and its tests.
            PYTHONPATH=os.pathsep.join((str(REPO / "supervisor"), str(REPO))),
        )
        return env

    def git(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """The operator's own git, in the project unless told otherwise."""
        return subprocess.run(
            ["git", *args],
            cwd=cwd or self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`agentvisor --state STATE ARGS`, run by the operator from the project folder."""
        return self.clis(args)[0]

    def cli_within(self, timeout_s: float, *args: str) -> subprocess.CompletedProcess[str]:
        """`cli`, killed (subprocess.TimeoutExpired) after `timeout_s`."""
        return self.clis(args, timeout_s=timeout_s)[0]

    def clis(
        self, *commands: tuple[str, ...], timeout_s: float = 180
    ) -> list[subprocess.CompletedProcess[str]]:
        """Several `agentvisor` commands at once, each its own process."""
        base = [sys.executable, "-m", "agentvisor", "--state", str(self.settings.state_dir)]
        running = [
            (
                args,
                subprocess.Popen(
                    [*base, *args],
                    cwd=self.root,
                    env=self.env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
            for args in commands
        ]
        done = []
        for args, process in running:
            try:
                out, err = process.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                for _, other in running:
                    other.kill()
                    other.communicate()
                raise
            done.append(subprocess.CompletedProcess([*base, *args], process.returncode, out, err))
        return done

    def ref(self, name: str) -> str | None:
        done = self.git("rev-parse", "--verify", "--quiet", name)
        return done.stdout.strip() or None

    def refs(self) -> dict[str, str]:
        out = self.git("for-each-ref", "--format=%(refname) %(objectname)").stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def wait_published(self, role: str, commit: str, timeout_s: float = 15.0) -> bool:
        """Whether `commit` becomes the tip of agent/ROLE in the project within `timeout_s`."""
        try:
            wait_until(
                lambda: self.ref(f"refs/heads/agent/{role}") == commit,
                timeout_s=timeout_s,
                interval_s=0.1,
                message=f"{commit[:10]} on agent/{role} in the project",
            )
            return True
        except AssertionError:
            return False

    def host_commands(self, attacker: str) -> list[tuple[str, Callable[[], Any]]]:
        """Everything the operator and agentvisor run on the host that an agent might steer."""
        clone = self.clones[attacker]
        return [
            # Two CLI processes at once: each spends most of its time importing.
            (
                "agentvisor merge --dry-run | agentvisor sync",
                lambda: self.clis(("merge", "--dry-run", "--json"), ("sync", "--json")),
            ),
            ("agentvisor merge", lambda: self.cli("merge", "--json")),
            ("git status", lambda: self.git("status")),
            ("git log -p", lambda: self.git("log", "--all", "-p", "--max-count=30")),
            ("git log --graph", lambda: self.git("log", "--graph", "--oneline", "--all", "-n40")),
            ("git diff", lambda: self.git("diff", self.start, f"refs/heads/agent/{attacker}")),
            ("git fetch", lambda: self.git("fetch", "--all")),
            # The operator trusts the agent's folder, as git's "dubious ownership" advises.
            (
                f"git fetch {clone}",
                lambda: self.git("-c", "safe.directory=*", "fetch", str(clone)),
            ),
            ("git submodule status", lambda: self.git("submodule", "status")),
            ("git worktree list", lambda: self.git("worktree", "list")),
        ]

    def run_host_commands(
        self, attacker: str, extra: list[tuple[str, Callable[[], Any]]] | None = None
    ) -> dict[str, list[str]]:
        """Run every host command; which markers appeared after which command."""
        return self.run_commands([*self.host_commands(attacker), *(extra or [])])

    def run_commands(self, commands: list[tuple[str, Callable[[], Any]]]) -> dict[str, list[str]]:
        seen = set(os.listdir(self.markers))
        appeared: dict[str, list[str]] = {}
        for label, command in commands:
            started = time.monotonic()
            done = command()
            took = time.monotonic() - started
            for result in done if isinstance(done, list) else [done]:
                if isinstance(result, subprocess.CompletedProcess):
                    tail = (result.stdout + result.stderr).strip()[-400:]
                    self.log.append(f"host: {label} ({took:.1f} s) -> {result.returncode}: {tail}")
            new = sorted(set(os.listdir(self.markers)) - seen)
            if new:
                appeared[label] = new
                seen.update(new)
        return appeared

    def merge_into_start(self) -> list[tuple[str, Callable[[], Any]]]:
        """The operator takes the agents' work into the start branch in their own checkout,
        then looks at it: host commands to run after `host_commands`."""
        return [
            ("agentvisor merge --into START", lambda: self.cli("merge", "--into", self.start)),
            ("git status (merged)", lambda: self.git("status")),
            ("git diff HEAD~1", lambda: self.git("diff", "HEAD~1")),
            ("git submodule status (merged)", lambda: self.git("submodule", "status")),
            (
                "git submodule update --init",
                lambda: self.git("submodule", "update", "--init", "--recursive"),
            ),
            ("git checkout .", lambda: self.git("checkout", "--", ".")),
            ("git add -A", lambda: self.git("add", "-A", "--dry-run")),
        ]

    def merged_into_start(self, inspect: Callable[[], None] = lambda: None) -> dict[str, list[str]]:
        """Run `merge_into_start`, call `inspect` on the merged checkout, then put the start
        branch back; which markers appeared after which command."""
        tip = self.ref(f"refs/heads/{self.start}") or self.start
        try:
            appeared = self.run_commands(self.merge_into_start())
            inspect()
        finally:
            self.reset_start(tip)
        return appeared

    def reset_start(self, tip: str) -> None:
        """Undo the operator's merge into the start branch (their checkout included)."""
        self.git("reset", "--quiet", "--hard", tip)
        self.git("clean", "-ffdq")

    def commit(self, role: str, name: str) -> str:
        """A harmless commit in the agent's sandbox, as the agent would make it."""
        status, out, err = self.exec(
            role,
            "sh",
            "-c",
            f"echo {name} >> {name}.txt && git add {name}.txt && git commit -qm {name}",
        )
        assert status == 0, out + err
        return self.inside_head(role)

    def reset_agent(self, role: str, commit: str) -> None:
        """Put the agent's branch back at `commit` (its shim publishes that, where it does)."""
        self.inside_git(role, "reset", "--quiet", "--hard", commit)
        self.wait_published(role, commit, timeout_s=10)

    def sandbox_uid(self, role: str) -> int:
        user = self.container(role).attrs["Config"].get("User") or ""
        return int(user.split(":")[0])

    def bind_mounts(self, role: str) -> list[dict[str, Any]]:
        self_mounts = self.container(role).attrs["Mounts"]
        return [m for m in self_mounts if m.get("Type") == "bind"]

    def owned_by_others(self) -> list[str]:
        """Paths in the project's .git not owned by the project's owner."""
        owner = self.root.stat().st_uid
        return [
            f"{path} (uid {path.lstat().st_uid})"
            for path in [self.git_dir, *self.git_dir.rglob("*")]
            if path.lstat().st_uid != owner
        ]

    # --- before and after ----------------------------------------------------------------
    @property
    def git_dir(self) -> Path:
        return self.root / ".git"

    def control_files(self) -> dict[str, tuple[Any, ...]]:
        found: dict[str, tuple[Any, ...]] = {}
        for folder, dirs, files in os.walk(self.git_dir):
            if Path(folder) == self.git_dir:
                dirs[:] = [d for d in dirs if d not in _SEMANTIC | {"objects"}]
                files = [f for f in files if f not in _SEMANTIC]
                if (self.git_dir / "objects" / "info").is_dir():
                    dirs.append("objects/info")
            dirs[:] = [d for d in dirs if d != "logs"]  # a worktree's reflogs: git's churn
            for name in [*files, *(d for d in dirs if (Path(folder) / d).is_symlink())]:
                if name in _CHURN:
                    continue
                path = Path(folder) / name
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    content: Any = ("symlink", os.readlink(path))
                else:
                    content = ("file", path.read_bytes())
                found[str(path.relative_to(self.git_dir))] = (
                    *content,
                    stat.S_IMODE(st.st_mode),
                    st.st_uid,
                )
        return found

    def reflogs(self) -> dict[str, bytes]:
        logs = self.git_dir / "logs"
        return {str(p.relative_to(logs)): p.read_bytes() for p in logs.rglob("*") if p.is_file()}

    def snapshot(self) -> Snapshot:
        packed = self.git_dir / "packed-refs"
        return Snapshot(
            self.refs(),
            packed.read_bytes() if packed.is_file() else None,
            self.control_files(),
            self.reflogs(),
            (self.git_dir.stat().st_uid, self.git_dir.stat().st_gid),
            frozenset(os.listdir(self.markers)),
        )

    def changed_refs(self, before: Snapshot, attacker: str | None) -> dict[str, tuple[Any, Any]]:
        """Refs that moved since `before`, but the attacker's own branch and the integration
        branch that `agentvisor merge` builds."""
        allowed = {"refs/heads/agentvisor/integration"}
        if attacker:
            allowed.add(f"refs/heads/agent/{attacker}")
        now = self.refs()
        return {
            name: (before.refs.get(name), now.get(name))
            for name in sorted(set(before.refs) | set(now))
            if name not in allowed and before.refs.get(name) != now.get(name)
        }

    def changed_control_files(self, before: Snapshot) -> list[str]:
        now = self.control_files()
        changes = []
        for name in sorted(set(before.control) | set(now)):
            if name not in now:
                changes.append(f"{name}: removed")
            elif name not in before.control:
                changes.append(f"{name}: added")
            elif before.control[name] != now[name]:
                changes.append(f"{name}: changed")
        return changes

    def damaged_reflogs(self, before: Snapshot) -> list[str]:
        now = self.reflogs()
        return [
            name
            for name, content in before.reflogs.items()
            if not now.get(name, b"").startswith(content)
        ]

    def new_markers(self, before: Snapshot) -> list[str]:
        return sorted(set(os.listdir(self.markers)) - before.markers)

    def assert_untouched(
        self, before: Snapshot, attacker: str, appeared: dict[str, list[str]] | None = None
    ) -> None:
        """No planted command ran, no ref moved (but the attacker's own branch), nothing in
        the project's .git changed."""
        problems = []
        if appeared:
            problems.append(f"planted commands ran on the host: {appeared}")
        elif self.new_markers(before):
            problems.append(f"planted commands ran on the host: {self.new_markers(before)}")
        if moved := self.changed_refs(before, attacker):
            problems.append(f"refs moved in the project: {moved}")
        if changed := self.changed_control_files(before):
            problems.append(f"the project's .git changed: {changed}")
        assert not problems, "\n".join(problems)

    def restore(self, before: Snapshot) -> None:
        """Put the project's .git back as it was (so that one attack that landed does not
        spoil the next test); refs last, once git reads the real repository again."""
        now = self.control_files()
        for name in set(now) - set(before.control):
            path = self.git_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        for name, (kind, content, mode, _uid) in before.control.items():
            if now.get(name) == before.control[name]:
                continue
            path = self.git_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or (path.exists() and kind == "symlink"):
                path.unlink()
            if kind == "symlink":
                path.symlink_to(content)
            else:
                path.write_bytes(content)
                path.chmod(mode)
        logs = self.git_dir / "logs"
        for name, content in before.reflogs.items():
            path = logs / name
            if not path.is_file() or not path.read_bytes().startswith(content):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
        packed = self.git_dir / "packed-refs"
        if before.packed_refs is None:
            packed.unlink(missing_ok=True)
        elif not packed.is_file() or packed.read_bytes() != before.packed_refs:
            packed.write_bytes(before.packed_refs)
        # The attacker's branch is its own (but must exist); the integration branch is merge's.
        kept = {f"refs/heads/agent/{self.attacker}", "refs/heads/agentvisor/integration"}
        now_refs = self.refs()
        for name, value in before.refs.items():
            if now_refs.get(name) != value and (name not in kept or name not in now_refs):
                self.git("update-ref", "--no-deref", name, value)
        for name in set(now_refs) - set(before.refs) - kept:
            self.git("update-ref", "-d", name)
        # What this (root) process wrote goes back to whoever had the .git (the old layout
        # handed it to the sandbox uid; an agent must still be able to work there).
        if before.owner[0] != os.getuid():
            for path in [self.git_dir, *self.git_dir.rglob("*")]:
                if path.lstat().st_uid == os.getuid():
                    os.chown(path, *before.owner, follow_symlinks=False)

    # --- lifecycle -----------------------------------------------------------------------
    def remove(self) -> None:
        from agentvisor.sandbox.sandboxes import SandboxBackend

        SandboxBackend(self.settings).remove(self.project, volumes=True)
        server_control.stop_server(self.settings)


def _operator_home(tmp: Path, root: Path) -> Path:
    home = tmp / "operator-home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Operator\n\temail = operator@example.com\n"
        f"[safe]\n\tdirectory = {root}\n",
        encoding="utf-8",
    )
    return home


def _has_setting(name: str) -> bool:
    from dataclasses import fields

    return name in {f.name for f in fields(Settings)}


@contextlib.contextmanager
def running_team(
    roles: tuple[str, ...], settings_env: dict[str, str] | None = None
) -> Iterator[Team]:
    """A demo team for a new project in a short temp folder (socket paths stay short), every
    teammate's demo commit on its branch in the project; removed afterwards."""
    require(docker_answers(), "a Docker engine")
    tmp = Path(tempfile.mkdtemp(prefix="av-", dir="/tmp"))
    markers = Path(tempfile.mkdtemp(prefix="av-mark-", dir="/tmp"))  # mounted nowhere
    root = make_repo(tmp / f"greet-{tmp.name[-6:].lower()}", SPEC)  # names are global
    git(root, "tag", "-a", TAG, "-m", "release")
    upstream = tmp / "upstream.git"
    git(tmp, "clone", "--quiet", "--bare", str(root), str(upstream))
    git(root, "remote", "add", "origin", str(upstream))
    git(root, "fetch", "--quiet", "origin")  # the operator's own fetch then moves no ref
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTVISOR_")}
    env["AGENTVISOR_DEMO_IMAGE"] = sandbox_test_image()
    env.update(settings_env or {})
    state = tmp / "state"
    state.mkdir()
    known = {k: v for k, v in (settings_env or {}).items() if _has_setting(_setting_name(k))}
    if known:  # the server reads the same settings from the state's config.toml
        (state / "config.toml").write_text(
            "".join(f"{_setting_name(k)} = {v}\n" for k, v in known.items()), encoding="utf-8"
        )
    settings = load_settings(state, env=env, memory_mb=512)
    options = launch.UpOptions(spec=root / "spec.md", roles=roles, agent="demo", wait_s=90)
    team: Team | None = None
    saved = {k: os.environ.get(k) for k in (settings_env or {})}
    try:
        os.environ.update(settings_env or {})  # for the server `up` starts
        report = launch.up(settings, options)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        team = Team(
            settings=settings,
            project=report.project,
            root=root.resolve(),
            start=report.start_branch,
            roles=tuple(a.role for a in report.agents),
            clones={a.role: Path(a.worktree) for a in report.agents},
            markers=markers,
            home=_operator_home(tmp, root.resolve()),
        )
        workers = [r for r in team.roles if r != "orchestrator"]
        wait_until(
            lambda: all(
                team.ref(f"refs/heads/agent/{r}") not in (None, team.ref(team.start))
                for r in workers
            ),
            timeout_s=60,
            interval_s=0.2,
            message="every teammate's demo commit on its branch in the project",
        )
        yield team
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        from agentvisor.sandbox.sandboxes import SandboxBackend

        SandboxBackend(settings).remove(launch.project_name(root.resolve()), volumes=True)
        if team is not None and team.project != launch.project_name(root.resolve()):
            team.remove()
        server_control.stop_server(settings)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(markers, ignore_errors=True)


def _setting_name(variable: str) -> str:
    return variable.removeprefix("AGENTVISOR_").lower()


@pytest.fixture(scope="module")
def team() -> Iterator[Team]:
    """One team per module: orchestrator, developer (the attacker) and tester."""
    with running_team(("orchestrator", "developer", "tester")) as running:
        yield running


@pytest.fixture
def before(team: Team) -> Iterator[Snapshot]:
    """The host before the test; afterwards the project's .git is put back as it was."""
    snapshot, logged = team.snapshot(), len(team.log)
    yield snapshot
    print("\n".join(team.log[logged:]))  # shown with a failure: what ran and what it said
    team.restore(snapshot)
