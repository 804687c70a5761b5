"""Reading a project's spec.md: checks that it is usable text and finds its title and goal.

Pure apart from reading the one file; every failure is a `SpecError` a user can act on.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from agentvisor.errors import SpecError

MAX_SPEC_BYTES = 1024 * 1024
# A spec has a recognisable goal when its paragraphs and list items (headings, code blocks,
# HTML comments and front matter do not count) hold at least this many words.
MIN_GOAL_WORDS = 5
MAX_GOAL_CHARS = 300
MAX_TITLE_CHARS = 120

_ATX_HEADING = re.compile(r" {0,3}#{1,6}(?=[ \t]|\Z)")
_SETEXT_UNDERLINE = re.compile(r" {0,3}(=+|-+)[ \t]*\Z")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_RULE = re.compile(r" {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*\Z")
_BLOCK_START = re.compile(r" {0,3}(?:[-*+]|\d{1,9}[.)])[ \t]+")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
# Bounded, so that a long run of brackets costs linear time, not quadratic.
_LINK = re.compile(r"!?\[([^\]\n]{0,500})\]\([^)\s]{0,2000}\)")
_MARKUP = re.compile(r"\*\*|__|[*`|]")
_QUOTE = re.compile(r"\A(?:[ \t]*>)+")
_TOKEN = re.compile(r"\w+")
_LETTER = re.compile(r"[^\W\d_]")
# Scripts written without spaces (Chinese, Japanese) count one word per character.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Spec:
    path: Path  # absolute
    # The first Markdown heading, else an old-style `PROJECT: name` line, else the file's
    # stem; at most MAX_TITLE_CHARS.
    title: str
    text: str  # the whole file, line endings normalised to \n
    goal: str  # the first paragraph or list item, on one line, at most MAX_GOAL_CHARS


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and check the spec at `path`; raise `SpecError` saying what to fix."""
    try:
        given = Path(path).expanduser()
    except RuntimeError:  # "~someone" for a user this machine does not have
        raise SpecError(f"Spec path {path!s} names a home directory that does not exist.") from None
    data = _read_bytes(given)
    text = _decode(data, given).replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise SpecError(
            f"Spec file {given} holds only whitespace; write what the team should build "
            "(a heading and a few sentences) and run again."
        )
    headings, paragraphs = _blocks(text)
    words = sum(_word_count(p) for p in paragraphs)
    if words < MIN_GOAL_WORDS:
        raise SpecError(
            f"Spec file {given} has no recognisable goal ({words} words of prose outside "
            f"headings and code, at least {MIN_GOAL_WORDS} needed); describe what to build "
            "in a sentence or two under the title."
        )
    title = headings[0] if headings else (_project_line(text) or given.stem)
    goal = next((g for g in map(_plain, paragraphs) if _word_count(g)), title)
    return Spec(
        path=given.resolve(),
        title=_shorten(title, MAX_TITLE_CHARS),
        text=text,
        goal=_shorten(goal, MAX_GOAL_CHARS),
    )


def _read_bytes(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise SpecError(
                f"Spec path {path} is a directory; give the path of a Markdown file such as "
                f"{path / 'spec.md'}."
            )
        if not stat.S_ISREG(mode):
            raise SpecError(f"Spec path {path} is not a regular file; give a Markdown file.")
        with path.open("rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise SpecError(
            f"Spec file {path} does not exist; check the path, or create it with a short "
            "description of what to build."
        ) from None
    except OSError as exc:
        raise SpecError(
            f"Spec file {path} cannot be read ({exc.strerror}); check its permissions."
        ) from None
    except ValueError:  # a NUL in the path, or text that is no file name (a lone surrogate)
        raise SpecError(
            f"Spec path {str(path)!a} is not a usable file name; give the path of a Markdown file."
        ) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(
            f"Spec file {path} is over the limit of {MAX_SPEC_BYTES:,} bytes (1 MiB); keep the "
            "spec to what the team must build and link to the rest."
        )
    if not data:
        raise SpecError(
            f"Spec file {path} is empty; write what the team should build "
            "(a heading and a few sentences) and run again."
        )
    return data


def _decode(data: bytes, path: Path) -> str:
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        raise SpecError(
            f"Spec file {path} is not valid UTF-8 (byte 0x{data[offset]:02x} at offset "
            f"{offset}); save it as UTF-8 text and run again."
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        offset = start + len(text[:nul].encode("utf-8"))
        raise SpecError(
            f"Spec file {path} has a NUL byte at offset {offset}, so it looks binary; "
            "give a plain-text Markdown file."
        )
    return text


def _blocks(text: str) -> tuple[list[str], list[str]]:
    """Split Markdown into heading texts and paragraph/list-item texts, skipping code."""
    lines = _HTML_COMMENT.sub("", _without_front_matter(text)).split("\n")
    headings: list[str] = []
    paragraphs: list[str] = []
    current: list[str] = []
    fence = ""

    def close() -> None:
        if current:
            paragraphs.append(" ".join(current))
            current.clear()

    for line in lines:
        if fence:
            if line.strip().startswith(fence):
                fence = ""
            continue
        opened = _FENCE.match(line)
        if opened:
            close()
            fence = opened.group(1)
            continue
        heading = _ATX_HEADING.match(line)
        if heading:
            close()
            title = _heading_text(line[heading.end() :])
            if title:
                headings.append(title)
            continue
        underline = _SETEXT_UNDERLINE.match(line)
        if underline and len(current) == 1 and not _BLOCK_START.match(current[0]):
            headings.append(current.pop().strip())
            continue
        if not line.strip() or _RULE.match(line):
            close()
            continue
        if _BLOCK_START.match(line):
            close()
        current.append(_QUOTE.sub("", line, count=1).strip())
    close()
    return headings, paragraphs


def _heading_text(rest: str) -> str:
    """An ATX heading's text without its optional closing run of `#` (`# C#` keeps its `#`)."""
    text = rest.strip()
    unclosed = text.rstrip("#")
    if not unclosed or unclosed[-1] in " \t":
        return unclosed.strip()
    return text


def _word_count(text: str) -> int:
    count = 0
    for token in _TOKEN.findall(text):
        count += len(_CJK.findall(token)) or (1 if _LETTER.search(token) else 0)
    return count


def _without_front_matter(text: str) -> str:
    if text.startswith("---\n"):
        end = re.search(r"^(?:---|\.\.\.)[ \t]*$", text[4:], re.MULTILINE)
        if end:
            return text[4 + end.end() :]
    return text


def _plain(paragraph: str) -> str:
    marker = _BLOCK_START.match(paragraph)
    text = _LINK.sub(r"\1", paragraph[marker.end() :] if marker else paragraph)
    return " ".join(_MARKUP.sub("", text).split())


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + "…"


_PROJECT_LINE = re.compile(r"^\s*PROJECT\s*:\s*(\S.*?)\s*$", re.MULTILINE)


def _project_line(text: str) -> str | None:
    """The name on a Tmux Orchestrator spec's `PROJECT: name` line, if it has one."""
    found = _PROJECT_LINE.search(text)
    return found.group(1) if found else None
