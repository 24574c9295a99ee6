"""The page's "Adapt to this camera": one adapt at a time in a low-priority thread beside the running door.

The door keeps deciding with the old head while the fit runs (the thread runs ``niceness`` nicer and BLAS on one
thread); when the new version is written, the holder reloads and the next frame is judged by it. The holder's
listeners hear ``adapt`` (success) or ``adapt_refused`` / ``adapt_failed``, with :attr:`ModelHolder.adapt_result`
saying what happened (the MQTT bridge publishes it).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.runtime.adapt import AdaptConfig, adapt

log = logging.getLogger("toolkit.runtime")


class AdaptJob:
    """At most one adapt running; its log lines, outcome and result for ``GET /door/adapt``."""

    def __init__(self, holder, labelled: Path | None, k: int = 3, n: int = 5) -> None:
        self.holder, self.labelled, self.k, self.n = holder, labelled, k, n
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.status = "idle"  # idle | running | adapted | estimated (a dry run) | refused | failed
        self.lines: list[str] = []
        self.message: str | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self.version: str | None = None
        self.estimate: dict | None = None  # the last dry run's figures (the page shows them before "Adapt")

    @property
    def state(self) -> Path | None:
        return self.holder.config.state

    def snapshot(self) -> dict:
        with self._lock:
            return {"status": self.status, "message": self.message, "lines": list(self.lines[-20:]),
                    "started": self.started, "finished": self.finished, "version": self.version,
                    "estimate": self.estimate}

    def start(self, force: bool = False, prior: str = "auto", dry_run: bool = False) -> dict:
        """Start an adapt in the background (``dry_run``: only its estimate on the labelled photos, status
        ``estimated``; no version written, nothing switched, nobody notified).

        Raises:
            ToolkitError: one is running already, or no state folder / labelled folder to work with.
        """
        if self.state is None:
            raise ToolkitError("no state folder for versions: run the door with --state DIR (systemd sets "
                               "StateDirectory)")
        if self.labelled is None:
            raise ToolkitError("no labelled folder: run the door with --snapshots DIR (the page files photos there)")
        with self._lock:
            if self.status == "running":
                raise ToolkitError("an adapt is running already; wait for it to finish")
            self.status, self.lines, self.message, self.version = "running", [], None, None
            self.started, self.finished = time.time(), None
        config = AdaptConfig(model=self.holder.config.folder, data=self.labelled, state=self.state, force=force,
                             prior=prior, k=self.k, n=self.n, dry_run=dry_run, file=self.holder.config.file)
        self.thread = threading.Thread(target=self._run, args=(config,), name="adapt", daemon=True)
        self.thread.start()
        return self.snapshot()

    def _log(self, line: str) -> None:
        log.info("adapt: %s", line)
        with self._lock:
            self.lines.append(line)

    def _run(self, config: AdaptConfig) -> None:
        try:
            record = adapt(config, log=self._log)
        except ToolkitError as exc:
            self._finish("refused", str(exc), None, notify=not config.dry_run)
        except Exception as exc:  # a bug must not kill the door: reported on the page and in the log
            log.exception("adapt failed")
            self._finish("failed", f"{type(exc).__name__}: {exc}", None, notify=not config.dry_run)
        else:
            if record.get("dry_run"):
                self._estimated(record)
                return
            self._finish("adapted", f"version {record['id']}: CV accuracy {record['cv']['accuracy']:.3f} on "
                         f"{record['cv']['n']} photos", record["id"])

    def _estimated(self, record: dict) -> None:
        cv = record["cv"]
        figures = {"accuracy": cv["accuracy"], "interval_95": cv["interval_95"], "n": cv["n"],
                   "counts": record["counts"], "current_accuracy": record["current_accuracy"],
                   "threshold": record["threshold"], "far_upper_95": record["far_upper_95"], "prior": cv["prior"]}
        with self._lock:
            self.status, self.estimate, self.finished = "estimated", figures, time.time()
            self.message = (f"estimate: CV accuracy {cv['accuracy']:.3f} on {cv['n']} photos; the current head "
                            f"{record['current_accuracy']:.3f} on the same photos")

    def _finish(self, status: str, message: str, version: str | None, notify: bool = True) -> None:
        if status == "adapted":
            self.holder.reload()  # the next frame is judged by the new version (before anyone hears "adapted")
        with self._lock:
            self.status, self.message, self.version, self.finished = status, message, version, time.time()
        if not notify:  # an estimate that could not be made: the page says why, MQTT hears nothing
            return
        self.holder.adapt_result = {"result": status, "version": version, "message": message}
        self.holder.notify("adapt" if status == "adapted" else f"adapt_{status}")
