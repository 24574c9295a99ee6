"""The model currently serving, and hot reload: validate a new export fully before swapping it in.

A reload builds a whole new :class:`~toolkit.inference.predictor.Predictor` (manifest, sha256, session
checks) off to the side; only a model that passes replaces the old one, so a half-copied or tampered
export is refused and the old model keeps answering.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.inference import versions
from toolkit.inference.predictor import Predictor
from toolkit.runtime.core.config import ModelConfig

log = logging.getLogger("toolkit.runtime")


class ModelHolder:
    """Holds the serving :class:`Predictor` and swaps it atomically on reload.

    Args:
        config: where the model is and how to run it.
        threshold: override the manifest's threshold (binary tasks).

    Raises:
        ToolkitError: the initial model is invalid (at start-up there is nothing to fall back on).
    """

    def __init__(self, config: ModelConfig, threshold: float | None = None) -> None:
        self.config = config
        self.threshold = threshold
        self._lock = threading.Lock()
        self.version_error: str | None = None  # why the chosen version does not serve (the export's head does)
        self._predictor = self._load()
        self._signature = self._sig()
        self.last_error: str | None = None
        self.listeners: list[Callable[[str], None]] = []  # called with "reload" or "reload_refused"
        # Extra checks a new model must pass before it is swapped in (the door needs a binary model);
        # each raises ToolkitError to refuse it.
        self.checks: list[Callable[[Predictor], None]] = []
        self.adapt_result: dict | None = None  # the last page adapt's outcome, for the listeners of "adapt*"

    @property
    def predictor(self) -> Predictor:
        return self._predictor  # one attribute read: callers get the old or the new model, never half

    def _load(self) -> Predictor:
        """The export, with the head version chosen in the state folder (``toolkit door adapt``/``rollback``).

        A chosen version that cannot serve (deleted, tampered, fitted on another export) is logged and the
        export's own head serves: the shipped model, never a half-read one.
        """
        c = self.config
        vid = versions.current(c.state) if c.state is not None else None
        self.version_error = None
        if vid is not None:
            try:
                return Predictor(c.folder, c.file, threads=c.threads, max_pixels=c.max_pixels,
                                 threshold=self.threshold, version=versions.version_dir(c.state, vid))
            except ToolkitError as exc:
                self.version_error = f"version {vid} not served: {exc}"
                log.error("%s; the export's own head serves", self.version_error)
        return Predictor(c.folder, c.file, threads=c.threads, max_pixels=c.max_pixels, threshold=self.threshold)

    def _sig(self) -> tuple:
        pointer = versions.adapt_root(self.config.state) / versions.CURRENT if self.config.state else None
        return folder_signature(self.config.folder), _file_stat(pointer)

    def reload(self) -> bool:
        """Load and validate the folder again; swap only when valid. Returns True when swapped."""
        with self._lock:  # two reloads at once (SIGHUP + watcher) would waste a load, not corrupt
            signature = self._sig()
            try:
                new = self._load()
                for check in self.checks:
                    check(new)
            except ToolkitError as exc:
                self.last_error = str(exc)
                self._signature = signature  # do not retry the same broken files in a loop
                log.error("reload refused, the old model keeps serving: %s", exc)
                self._emit("reload_refused")
                return False
            self._predictor, self._signature, self.last_error = new, signature, None
            log.info("reloaded %s (%s)", new.name, new.describe()["sha256"][:12])
            self._emit("reload")
            return True

    def changed(self) -> bool:
        """True when the folder's files changed since the last (attempted) load."""
        return self._sig() != self._signature

    def watch(self, interval: float, stop: threading.Event) -> threading.Thread:
        """Poll the folder every ``interval`` seconds in a daemon thread and reload on change."""

        def loop() -> None:
            while not stop.wait(interval):
                if self.changed():
                    self.reload()

        thread = threading.Thread(target=loop, name="model-watch", daemon=True)
        thread.start()
        return thread

    def install_sighup(self) -> None:
        """Reload on SIGHUP (``systemctl reload``). Must be called from the main thread."""
        if hasattr(signal, "SIGHUP"):
            # Reload off the signal handler: loading a model takes time and may log.
            signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=self.reload, daemon=True).start())

    def notify(self, event: str) -> None:
        """Tell the listeners about a model event from outside (e.g. "adapt" once a new version serves)."""
        self._emit(event)

    def _emit(self, event: str) -> None:
        for listener in self.listeners:
            listener(event)


def folder_signature(folder: Path) -> tuple:
    """Names, sizes and mtimes of the folder's files: cheap to poll, changes on any rewrite."""
    try:
        entries = sorted(Path(folder).iterdir())
        return tuple((p.name, s.st_size, s.st_mtime_ns) for p in entries if p.is_file() for s in [p.stat()])
    except OSError:
        return ()


def _file_stat(path: Path | None) -> tuple:
    try:
        st = path.stat() if path is not None else None
        return (st.st_size, st.st_mtime_ns, st.st_ino) if st else ()
    except OSError:
        return ()
