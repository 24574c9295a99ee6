"""The door's JSON-lines event log, rotated by size: an SD card must not fill up (or wear out) at 30 lines a second.

``events.jsonl`` grows to ``max_bytes``, then becomes ``events.jsonl.1`` (the older ones shift to ``.2``...,
the oldest beyond ``backups`` is deleted) and a new file starts: at most ``(backups + 1) * max_bytes`` on disk.
The same naming as the standard library's ``RotatingFileHandler`` (and logrotate), so tools that read those
read these; a class of its own because a log record per frame through ``logging`` costs more and a full
disk must warn once, not print a traceback per frame.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("toolkit.runtime")


class EventLog:
    """Appends lines to ``path``, rotating at ``max_bytes`` (0 = never) and keeping ``backups`` old files.

    Raises:
        OSError: the file cannot be opened (the door turns that into a user error).
    """

    def __init__(self, path: Path, max_bytes: int = 0, backups: int = 3) -> None:
        self.path, self.max_bytes, self.backups = Path(path), max_bytes, backups
        self._file = open(self.path, "a", buffering=1)  # line-buffered: one flush per event
        self._size = self._file.tell()
        self._failed = False

    def write(self, data: str) -> None:
        """Append ``data`` (whole lines, like a file's write); a write error is logged once, never raised."""
        try:
            if self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._file.write(data)
            self._size += len(data.encode())
            self._failed = False
        except (OSError, ValueError) as exc:  # a full disk must not stop the door
            if not self._failed:
                self._failed = True
                log.warning("event log %s: %s", self.path, exc)

    def _rotate(self) -> None:
        self._file.close()
        try:
            if self.backups > 0:
                for i in range(self.backups - 1, 0, -1):
                    older = self.path.with_name(f"{self.path.name}.{i}")
                    if older.exists():
                        os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            else:
                self.path.unlink(missing_ok=True)
        finally:  # reopened even when a rename failed, so the next line has a file to go to
            self._file = open(self.path, "a", buffering=1)
            self._size = self._file.tell()

    def close(self) -> None:
        self._file.close()
