"""Progress of long work (feature caching, int8 calibration, export checks, benchmarks), with an ETA.

On a terminal, a bar on stderr drawn by rich (which typer installs: no dependency of its own). When
stderr is not a terminal (CI, systemd, a pipe), a plain ``info:`` line every :data:`PLAIN_EVERY` seconds
and one at the end, so a log shows that work goes on without a line per batch. Nothing at all when the
``toolkit`` logger does not show info lines (``--quiet``, or a library caller's choice)::

    with progress("caching train features", total=len(split), unit="images") as bar:
        for batch in batches:
            ...
            bar.advance(len(batch))

TensorFlow-free and cheap to import: rich is imported only when a bar is drawn.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from toolkit.settings import check, setting

log = logging.getLogger("toolkit.progress")
PLAIN_EVERY = 10.0  # seconds between plain lines: enough to see work move, few enough for a log file


@dataclass(frozen=True)
class OutputOptions:
    """How much a command prints; every command built from configs has these options (toolkit.cli.options)."""

    quiet: bool = setting(False, "Print warnings and errors only: no progress bars, no info lines.")

    def __post_init__(self):
        check(self)

    def apply(self) -> None:
        """Set the ``toolkit`` logger's level, which info lines and :func:`progress` follow."""
        logging.getLogger("toolkit").setLevel(logging.WARNING if self.quiet else logging.INFO)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (in-process callers such as tests swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _LowerLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        return super().format(record)


def log_to_stderr() -> None:
    """Show the ``toolkit`` logger's info lines, warnings and progress on stderr as ``info: ...`` lines (once)."""
    handler = _StderrHandler()
    handler.setFormatter(_LowerLevelFormatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("toolkit")
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False


class Progress:
    """Counts work done; :func:`progress` hands one out. The base class shows nothing (``--quiet``)."""

    def __init__(self, what: str, total: int | None, unit: str):
        self.what, self.total, self.unit, self.done = what, total, unit, 0
        self._t0 = time.monotonic()

    def advance(self, n: int = 1) -> None:
        """Add ``n`` units of finished work."""
        self.done += n

    def close(self) -> None:
        """The work ended (or failed): a last line or the bar's final state."""

    def describe(self) -> str:
        """``3,200/13,000 images (25 %), 41 images/s, about 4 min left`` (without the total: no ETA)."""
        elapsed = time.monotonic() - self._t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f} %)"
        if rate >= 1 or not rate:
            text += f", {rate:.1f} {self.unit}/s"
        else:  # slow units (training runs, benchmark rounds): time per unit reads better than 0.0/s
            text += f", {_duration(1 / rate)} each"
        if self.total and self.done < self.total and rate > 0:
            text += f", about {_duration((self.total - self.done) / rate)} left"
        elif self.total and self.done >= self.total:
            text += f", done in {_duration(elapsed)}"
        return text


class _Plain(Progress):
    def __init__(self, what: str, total: int | None, unit: str, every: float):
        super().__init__(what, total, unit)
        self._every, self._last = every, time.monotonic()

    def advance(self, n: int = 1) -> None:
        super().advance(n)
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            log.info("%s: %s", self.what, self.describe())

    def close(self) -> None:
        log.info("%s: %s", self.what, self.describe())


class _Bar(Progress):
    def __init__(self, what: str, total: int | None, unit: str):
        super().__init__(what, total, unit)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn(unit), TaskProgressColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                             TimeRemainingColumn(), console=Console(file=sys.stderr), transient=False)
        self._task = self._bar.add_task(what, total=total)
        self._bar.start()

    def advance(self, n: int = 1) -> None:
        super().advance(n)
        self._bar.advance(self._task, n)

    def close(self) -> None:
        self._bar.stop()


@contextmanager
def progress(what: str, total: int | None, unit: str = "images", every: float = PLAIN_EVERY) -> Iterator[Progress]:
    """Show the progress of ``total`` units of work while the block runs (see the module's docstring).

    Args:
        what: what is being done, e.g. ``"caching train features"``.
        total: units of work in all (None or 0: unknown; no ETA then).
        unit: the unit's name, plural (``images``, ``batches``, ``runs``).
        every: seconds between plain lines when stderr is not a terminal.
    """
    if not log.isEnabledFor(logging.INFO):
        shown = Progress(what, total, unit)
    elif sys.stderr.isatty():
        shown = _Bar(what, total, unit)
    else:
        shown = _Plain(what, total, unit, every)
    try:
        yield shown
    finally:
        shown.close()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
