"""A bind mount of a host path into a sandbox, as the sandbox rules check it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mount:
    """A bind mount: host `source` at `target` in the sandbox."""

    source: Path
    target: Path
    read_only: bool
