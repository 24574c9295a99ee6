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

    Each line is one ``write(2)`` on an ``O_APPEND`` descriptor, with no buffer in between: a line the disk
    had no room for is cut back off (never half a line, never a line repeated by a later flush), and the
    caller learns that it failed. A full disk is logged once when it fills and once when writing works again.

    Raises:
        OSError: the file cannot be opened (the door turns that into a user error).
    """

    def __init__(self, path: Path, max_bytes: int = 0, backups: int = 3) -> None:
        self.path, self.max_bytes, self.backups = Path(path), max_bytes, backups
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self._failed = False
        self.lost = 0  # lines the disk had no room for

    def _open(self) -> int:
        # O_NOFOLLOW: a link planted where the log goes must not make the door append to another file.
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)

    def write(self, data: str) -> bool:
        """Append ``data`` (whole lines); returns False when it could not be written (logged once, never raised)."""
        raw = data.encode()
        try:
            if self.max_bytes and self._size and self._size + len(raw) > self.max_bytes:
                self._rotate()
            written = os.write(self._fd, raw)
            if written != len(raw):  # a partial line: cut it back off so the file stays whole lines
                os.ftruncate(self._fd, self._size)
                raise OSError(28, "No space left on device (partial line removed)")
            self._size += written
            if self._failed:
                self._failed = False
                log.warning("event log %s: writing again (%d lines were lost while it failed)", self.path, self.lost)
            return True
        except (OSError, ValueError) as exc:  # a full disk must not stop the door
            self.lost += 1
            if not self._failed:
                self._failed = True
                log.warning("event log %s: %s; lines are lost until there is room again (openings first)",
                            self.path, exc)  # fmt: skip
            return False

    def _rotate(self) -> None:
        os.close(self._fd)
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
            self._fd = self._open()
            self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
