"""The shim's own record of the markers it has typed and submitted.

A second witness beside the pane history: it survives a pane whose history was cleared, a
respawned pane and a restarted tmux server (it lives in the agent's home volume).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

KEEP_MARKERS = 2000  # a message leased again is one delivered minutes ago, not thousands ago


class DeliveryJournal:
    """An append-only file of markers, one a line, trimmed to the latest `KEEP_MARKERS`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._markers = self._load()

    def _load(self) -> list[str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line]

    def __contains__(self, marker: str) -> bool:
        with self._lock:
            return marker in self._markers

    def record(self, marker: str) -> None:
        """Write `marker` durably (fsync) before the message is acked."""
        with self._lock:
            self._markers.append(marker)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if len(self._markers) > 2 * KEEP_MARKERS:
                self._markers = self._markers[-KEEP_MARKERS:]
                temporary = self.path.with_name(self.path.name + ".tmp")
                _write_synced(temporary, "w", "".join(m + "\n" for m in self._markers))
                os.replace(temporary, self.path)
            else:
                _write_synced(self.path, "a", marker + "\n")


def _write_synced(path: Path, mode: str, text: str) -> None:
    with open(path, mode, encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
