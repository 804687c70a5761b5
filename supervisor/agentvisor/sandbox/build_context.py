"""Docker build contexts made in memory: uncompressed tars with fixed owners and times, so that
the same files give the same context, and hit the layer cache, wherever they were read from."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    """One member of a context: a file (`data`) or, with `data` None, a folder."""

    name: str
    data: bytes | None
    executable: bool = False


def file_entry(name: str, path: Path, keep_mode: bool = True) -> Entry:
    """`path` as `name`; executable when the file is and `keep_mode` (else never)."""
    return Entry(name, path.read_bytes(), keep_mode and os.access(path, os.X_OK))


def tree_entries(prefix: str, root: Path, keep_mode: bool = True) -> Iterator[Entry]:
    """`root` and everything under it as `prefix/...`, folders included, in sorted order;
    Python's caches left out."""
    yield Entry(prefix, None)
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        name = f"{prefix}/{path.relative_to(root).as_posix()}"
        if path.is_dir():
            yield Entry(name, None)
        elif path.is_file():
            yield file_entry(name, path, keep_mode)


def context_tar(entries: Iterable[Entry]) -> bytes:
    """The entries as a tar: owner root, time 0, mode 0644 or 0755 (what git keeps of a mode)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mtime = 0
            if entry.data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                continue
            info.size = len(entry.data)
            info.mode = 0o755 if entry.executable else 0o644
            tar.addfile(info, io.BytesIO(entry.data))
    return buffer.getvalue()
