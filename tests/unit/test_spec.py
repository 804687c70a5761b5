"""load_spec: title and goal extraction, and a clear SpecError for every unusable spec."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentvisor import cli
from agentvisor.core.spec import (
    MAX_GOAL_CHARS,
    MAX_SPEC_BYTES,
    MAX_TITLE_CHARS,
    MIN_GOAL_WORDS,
    load_spec,
)
from agentvisor.errors import SpecError

SPECS = Path(__file__).resolve().parent.parent / "data" / "specs"


def write(tmp_path: Path, content: str | bytes, name: str = "spec.md") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def test_load_spec_reads_title_text_and_goal() -> None:
    spec = load_spec(SPECS / "web-application.md")
    assert spec.title == "Recipe Box"
    assert spec.goal == "Build a web application where home cooks save and share recipes."
    assert spec.text.startswith("# Recipe Box\n")
    assert spec.path == (SPECS / "web-application.md").resolve()


def test_every_sample_spec_loads() -> None:
    for path in sorted(SPECS.glob("*.md")):
        assert load_spec(path).goal


def test_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "Build a tool that renames photos by date.")
    monkeypatch.chdir(tmp_path)
    assert load_spec("spec.md").path == tmp_path.resolve() / "spec.md"


def test_title_is_file_stem_when_spec_has_no_heading(tmp_path: Path) -> None:
    path = write(tmp_path, "Build a tool that renames photos by date.\n", "photo-renamer.md")
    assert load_spec(path).title == "photo-renamer"


def test_title_is_an_old_style_project_line_when_spec_has_no_heading(tmp_path: Path) -> None:
    text = "PROJECT: Photo Renamer\n\nBuild a tool that renames photos by date.\n"
    assert load_spec(write(tmp_path, text, "spec.md")).title == "Photo Renamer"


def test_plan_prints_the_project_name_and_where_it_comes_from(tmp_path: Path) -> None:
    repo = tmp_path / "Photo_Tools"
    repo.mkdir()
    spec = write(repo, "PROJECT: X\n\nBuild a tool that renames photos by date.\n", "spec.md")
    runner = CliRunner()
    outside = runner.invoke(cli.app, ["plan", str(spec)])
    assert outside.exit_code == 0, outside.output
    assert "spec: X (" in outside.output
    assert "project: none yet (" in outside.output and "not inside a git repository" in (
        outside.output
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "spec.md"], check=True)
    subprocess.run([*git, "commit", "-qm", "spec"], check=True)
    inside = runner.invoke(cli.app, ["plan", str(spec), "--json"])
    assert json.loads(inside.output)["project"] == "photo-tools"
    named = runner.invoke(cli.app, ["plan", str(spec)])
    assert f"project: photo-tools, named after the folder of its repository, {repo}" in (
        named.output
    )


def test_title_is_first_heading_of_any_level(tmp_path: Path) -> None:
    path = write(tmp_path, "Intro words come first here.\n\n### Deep title ###\n\n# Later\n")
    assert load_spec(path).title == "Deep title"


@pytest.mark.parametrize(
    ("heading", "title"),
    [("# C# bindings", "C# bindings"), ("## Shop ##", "Shop"), ("# Tool #1", "Tool #1")],
)
def test_title_drops_only_a_closing_run_of_hashes(tmp_path: Path, heading, title) -> None:
    spec = load_spec(write(tmp_path, f"{heading}\n\nBuild a thing that works well.\n"))
    assert spec.title == title


def test_title_from_setext_heading(tmp_path: Path) -> None:
    path = write(tmp_path, "Photo renamer\n=============\n\nRename photos by the date taken.\n")
    spec = load_spec(path)
    assert spec.title == "Photo renamer"
    assert spec.goal == "Rename photos by the date taken."


def test_heading_inside_code_block_is_not_the_title(tmp_path: Path) -> None:
    text = "```bash\n# install it\n```\n\n# Real title\n\nBuild the real thing now.\n"
    assert load_spec(write(tmp_path, text)).title == "Real title"


def test_goal_is_first_paragraph_without_markdown_markup(tmp_path: Path) -> None:
    text = (
        "# Shop\n\n"
        "> Build a **small** shop for `my_store` with [Stripe](https://stripe.com)\n"
        "> payments.\n\n"
        "More detail follows.\n"
    )
    goal = load_spec(write(tmp_path, text)).goal
    assert goal == "Build a small shop for my_store with Stripe payments."


def test_goal_can_be_a_list_item(tmp_path: Path) -> None:
    text = "# Tasks\n\n- Build a todo list app with due dates\n- Add reminders\n"
    assert load_spec(write(tmp_path, text)).goal == "Build a todo list app with due dates"


def test_goal_skips_front_matter_and_html_comments(tmp_path: Path) -> None:
    text = (
        "---\nowner: ops team lead person\n---\n"
        "<!-- template: write your goal below, replacing this -->\n"
        "# Backup\n\nBack up the shared drive every night to cloud storage.\n"
    )
    spec = load_spec(write(tmp_path, text))
    assert spec.title == "Backup"
    assert spec.goal == "Back up the shared drive every night to cloud storage."


def test_long_goal_is_cut_at_a_word_boundary(tmp_path: Path) -> None:
    goal = load_spec(write(tmp_path, "word " * 500)).goal
    assert len(goal) <= MAX_GOAL_CHARS
    assert goal.endswith("word…")


def test_long_title_is_cut_at_a_word_boundary(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "# " + "Title " * 100 + "\n\nBuild a thing that works.\n"))
    assert len(spec.title) <= MAX_TITLE_CHARS
    assert spec.title.endswith("Title…")


def test_crlf_line_endings_are_normalised(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, b"# Title\r\n\r\nBuild a thing that works well.\r\n"))
    assert "\r" not in spec.text
    assert spec.title == "Title"


def test_utf8_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "\ufeff# Title\n\nBuild a thing that works well.\n"))
    assert spec.title == "Title"
    assert not spec.text.startswith("\ufeff")


def test_spec_without_spaces_between_words_has_a_goal(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "# 待办\n\n构建一个家庭待办事项网页应用。\n"))
    assert spec.goal == "构建一个家庭待办事项网页应用。"


def test_spec_of_exactly_the_size_limit_is_accepted(tmp_path: Path) -> None:
    text = "Build a tool that renames photos.\n"
    path = write(tmp_path, text + " " * (MAX_SPEC_BYTES - len(text)))
    assert load_spec(path).goal == "Build a tool that renames photos."


# --- errors -------------------------------------------------------------------------------


def load_error(path: Path) -> str:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = caught.value.message
    assert str(path) in message  # names the file
    assert message.endswith(".") and ". " not in message  # one sentence
    return message


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    assert "does not exist" in load_error(tmp_path / "nope.md")


def test_file_under_a_missing_directory_is_a_spec_error(tmp_path: Path) -> None:
    assert "does not exist" in load_error(tmp_path / "nope" / "spec.md")


def test_directory_is_a_spec_error_suggesting_a_file(tmp_path: Path) -> None:
    message = load_error(tmp_path)
    assert "is a directory" in message
    assert str(tmp_path / "spec.md") in message


def test_empty_file_is_a_spec_error(tmp_path: Path) -> None:
    assert "is empty" in load_error(write(tmp_path, b""))


def test_whitespace_only_file_is_a_spec_error(tmp_path: Path) -> None:
    assert "only whitespace" in load_error(write(tmp_path, " \n\t\r\n  \n"))


def test_invalid_utf8_is_a_spec_error_giving_the_byte_offset(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, b"# Title\xff and more text"))
    assert "not valid UTF-8" in message
    assert "0xff at offset 7" in message


def test_invalid_utf8_offset_counts_the_byte_order_mark(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, b"\xef\xbb\xbfab\xc3("))
    assert "offset 5" in message


def test_latin1_text_is_a_spec_error(tmp_path: Path) -> None:
    path = write(tmp_path, "Créer une application de gestion.".encode("latin-1"))
    assert "offset 2" in load_error(path)


def test_nul_byte_is_a_spec_error(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, b"Build a tool that works\x00 well"))
    assert "NUL byte at offset 23" in message


def test_file_over_the_size_limit_is_a_spec_error(tmp_path: Path) -> None:
    path = write(tmp_path, b"a " * (MAX_SPEC_BYTES // 2) + b"!")
    assert "over the limit" in load_error(path)


@pytest.mark.parametrize(
    "text",
    [
        "TODO",
        "# Project\n\n## Goal\n\n## Requirements\n\n## Notes\n",
        "# A long title with many words but nothing under it\n",
        "```python\nprint('build me a web app with many words')\n```\n",
        "<!-- Describe here what the team should build in a few sentences -->\n",
        "---\ntitle: build a web app for the shop\n---\n",
        "- a\n- b\n\n---\n\n| x | y |\n",
    ],
    ids=[
        "one-word",
        "headings-only",
        "title-only",
        "code-only",
        "comment-only",
        "front-matter-only",
        "too-few-words",
    ],
)
def test_spec_without_recognisable_goal_is_a_spec_error(tmp_path: Path, text: str) -> None:
    message = load_error(write(tmp_path, text))
    assert "no recognisable goal" in message
    assert f"at least {MIN_GOAL_WORDS}" in message


@pytest.mark.timeout(20)
@pytest.mark.parametrize("filler", ["1", " ", "[", "<!--", "- ", " >", "# ", "```\n"], ids=repr)
def test_pathological_spec_of_the_maximum_size_loads_in_linear_time(tmp_path, filler) -> None:
    start = "Build a tool that renames photos.\n\n"
    body = filler * ((MAX_SPEC_BYTES - len(start)) // len(filler))
    assert load_spec(write(tmp_path, start + body)).goal.startswith("Build a tool")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_a_spec_error(tmp_path: Path) -> None:
    path = write(tmp_path, "Build a tool that renames photos.")
    path.chmod(0)
    try:
        assert "cannot be read" in load_error(path)
    finally:
        path.chmod(0o600)


def test_fifo_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "spec.md"
    os.mkfifo(path)
    assert "not a regular file" in load_error(path)
