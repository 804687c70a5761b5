"""The publisher's decisions (when to push, how long to back off) and how it reads git."""

from __future__ import annotations

import pytest

from agent_shim.git_publish import (
    GitBranch,
    PublishSchedule,
    PushOutcome,
    push_env,
    push_result,
)

A, B = "a" * 40, "b" * 40


def test_a_new_tip_is_due_at_once_and_not_again_once_pushed():
    schedule = PublishSchedule()
    assert not schedule.due(0.0)  # nothing seen yet
    assert schedule.observe(A)
    assert schedule.due(0.0)
    assert schedule.record(A, PushOutcome.OK, 0.1) == 0.0
    assert not schedule.due(100.0)
    assert not schedule.observe(A)


def test_failures_back_off_doubling_up_to_the_maximum():
    schedule = PublishSchedule(retry_initial_s=0.5, retry_max_s=4.0)
    schedule.observe(A)
    delays = [schedule.record(A, PushOutcome.FAILED, 10.0) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert not schedule.due(13.9)
    assert schedule.due(14.0)


def test_a_new_commit_is_offered_at_once_even_during_a_backoff():
    schedule = PublishSchedule(retry_initial_s=1.0)
    schedule.observe(A)
    for _ in range(5):
        schedule.record(A, PushOutcome.FAILED, 0.0)
    assert not schedule.due(1.0)
    schedule.observe(B)
    assert schedule.due(1.0)
    assert schedule.record(B, PushOutcome.FAILED, 1.0) == 1.0  # the backoff starts over


def test_a_refused_push_is_retried_only_much_later_or_for_a_new_tip():
    schedule = PublishSchedule(rejected_retry_s=60.0)
    schedule.observe(A)
    assert schedule.record(A, PushOutcome.REJECTED, 0.0) == 60.0
    assert not schedule.due(59.0)
    assert schedule.due(60.0)
    schedule.record(A, PushOutcome.REJECTED, 60.0)
    schedule.observe(B)
    assert schedule.due(61.0)


def test_a_deleted_branch_is_never_pushed_and_its_return_is():
    schedule = PublishSchedule()
    schedule.observe(A)
    schedule.record(A, PushOutcome.OK, 0.0)
    schedule.observe(None)
    assert not schedule.due(1.0)  # no deletion is ever offered
    schedule.observe(A)
    assert not schedule.due(2.0)  # back where it was published
    schedule.observe(B)
    assert schedule.due(3.0)


def test_a_push_the_server_refused_says_why_in_one_line():
    stdout = (
        "To http://127.0.0.1:7399/git/project.git\n"
        "!\trefs/heads/agent/dev:refs/heads/agent/dev\t[remote rejected] (fast-forward-only)\n"
        "Done\n"
    )
    stderr = (
        "remote: agentvisor: agent/dev may not be rewritten (rule fast-forward-only)        \n"
        "remote: \x1b[31m\n"
        "error: failed to push some refs to 'http://127.0.0.1:7399/git/project.git'\n"
    )
    result = push_result(1, stdout, stderr)
    assert result.outcome is PushOutcome.REJECTED
    assert result.detail == (
        "[remote rejected] (fast-forward-only); "
        "agentvisor: agent/dev may not be rewritten (rule fast-forward-only);  [31m"
    )


def test_a_push_that_did_not_reach_the_server_is_a_failure_to_retry():
    stderr = (
        "fatal: unable to access 'http://127.0.0.1:7399/git/project.git/': "
        "Failed to connect to 127.0.0.1 port 7399: Connection refused\n"
    )
    result = push_result(128, "", stderr)
    assert result.outcome is PushOutcome.FAILED
    assert result.detail.startswith("fatal: unable to access")
    assert push_result(0, "Done\n", "").outcome is PushOutcome.OK
    assert push_result(-9, "", "").detail == "git push exited -9"


def test_the_token_goes_only_into_a_header_for_the_channel_and_nothing_else_is_inherited():
    inherited = {
        "PATH": "/usr/bin",
        "HOME": "/home/agent",
        "GIT_DIR": "/elsewhere",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.sshCommand",
        "GIT_CONFIG_VALUE_0": "evil",
        "HTTP_PROXY": "http://proxy",
    }
    env = push_env("tok", "http://127.0.0.1:7399/", inherited)
    config = {
        env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"]
        for i in range(int(env["GIT_CONFIG_COUNT"]))
    }
    assert config == {
        "core.hooksPath": "/dev/null",
        "http.http://127.0.0.1:7399/.extraHeader": "Authorization: Bearer tok",
    }
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/home/agent"
    assert "GIT_DIR" not in env and "HTTP_PROXY" not in env
    assert "Bearer" not in str(push_env(None, "http://127.0.0.1:7399/", inherited))


@pytest.mark.parametrize("role", ["", "../x", "a/b", "-x", "dev.lock", "a b", "x" * 65])
def test_a_role_that_is_not_a_plain_branch_name_part_is_refused(tmp_path, role):
    with pytest.raises(ValueError, match="role"):
        GitBranch(str(tmp_path), role)


def test_a_folder_without_git_has_no_git_dir(tmp_path):
    assert GitBranch(str(tmp_path), "dev").git_dir is None
