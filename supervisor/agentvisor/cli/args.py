"""Command-line values checked where they are typed: a bad one is a one-line usage error
(click's), never a traceback from deeper down."""

from __future__ import annotations

import math

import typer


def finite_float(text: str) -> float:
    """A number that is finite: `nan`, `inf` and `1e999` are refused."""
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise typer.BadParameter(f"{text!r} is not a finite number")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise typer.BadParameter(f"{text!r} is negative")
    return value


def undecodable_argument(argv: list[str]) -> int | None:
    """The index of the first argument that was not valid UTF-8 (Python keeps such bytes as
    lone surrogates), or None."""
    for index, arg in enumerate(argv):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return index
    return None


# Typer 0.2x carries its own copy of click; older ones use click itself.
try:
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - the older layout
    from click.exceptions import (  # type: ignore[assignment]
        ClickException,
        NoArgsIsHelpError,
        UsageError,
    )

__all__ = [
    "ClickException",
    "NoArgsIsHelpError",
    "UsageError",
    "finite_float",
    "non_negative_float",
    "undecodable_argument",
]
