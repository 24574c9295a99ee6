"""The resume state of a training run, written after every epoch so a killed run loses only the epoch in flight.

A backup folder holds TensorFlow checkpoints (``ckpt-N.index``, ``ckpt-N.data-*``) of every variable of the model
and its optimizer after epoch N, and ``state.json``: the latest checkpoint, the best epoch's (whose weights become
``model.keras`` at the end), the last finished epoch, early stopping's verdict and the best monitored value. A
checkpoint is written and synced to the disk before ``state.json`` (replaced atomically, synced with its folder
entry) names it; other checkpoints go after that. A kill or a power cut at any moment therefore leaves the last
complete state.

At an epoch's end the variables are copied (one graph call) into a second set that a writer thread saves while
the next epoch trains; its error (a full disk) is raised at the next epoch's end. Under a distribution strategy
the state is written on the training thread instead: saving mirrored variables takes collective steps that every
worker must take in the same order. docs/training.md has what it costs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.train.runs import write_json_atomic

STATE = "state.json"
FORMAT = 2  # 1: raw slot files (before 2026-11-27)
RESTART = "delete {folder} and start the run again without --resume"


def durable_epochs(folder: Path) -> int:
    """How many epochs a backup folder holds: the last finished epoch + 1 (0 if none or unreadable)."""
    try:
        return int(json.loads((Path(folder) / STATE).read_text())["epoch"]) + 1
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def ResumeState(model, folder: Path, monitor: str, best: float | None, data_epoch=None):  # noqa: N802 (lazy class)
    """A Keras callback that keeps the resume state in ``folder`` (see the module's docstring).

    Args:
        model: the compiled model being trained.
        folder: the backup folder; created at the first epoch's end.
        monitor: the logged value that picks the best epoch (lower is better).
        best: the lowest ``monitor`` of earlier stages: only a better epoch replaces their model.
        data_epoch: the epoch counter the training data's shuffle reads; set at each epoch's start.
    """
    from toolkit._keras import keras, tf

    t = tf()

    class _ResumeState(keras().callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.folder = Path(folder)
            self._state = {"format": FORMAT, "epoch": -1, "stopped": False, "improved": False, "checkpoint": None,
                           "best": math.inf if best is None else float(best), "best_checkpoint": None}
            self._ckpt = self._shadow = self._copy = self._writer = self._pending = None

        def _build(self) -> None:
            """The checkpoint of every variable, in a fixed order, and the copy the writer thread saves."""
            if self._ckpt is not None:
                return
            optimizer = model.optimizer
            variables = list(model.weights)
            if optimizer is not None:
                if not getattr(optimizer, "_built", False):  # set by build()
                    optimizer.build(model.trainable_variables)  # slot variables must exist to be restored
                variables += list(optimizer.variables() if callable(optimizer.variables) else optimizer.variables)
            self._ckpt = t.train.Checkpoint(state=variables)
            if not t.distribute.has_strategy():
                self._shadow = t.train.Checkpoint(state=[t.Variable(v, trainable=False) for v in variables])
                self._copy = t.function(lambda: [s.assign(v) for s, v in zip(self._shadow.state, variables)])
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="resume-state")

        def restore(self) -> int:
            """Load the latest finished epoch's state, if any; returns the next epoch to train (0 if none)."""
            self._build()
            path, restart = self.folder / STATE, RESTART.format(folder=self.folder)
            if not path.is_file():
                return 0
            try:
                state = json.loads(path.read_text())
                if state.get("format") != FORMAT:
                    raise ToolkitError(f"{self.folder}: resume state in an older format; {restart}")
                self._ckpt.read(str(self.folder / state["checkpoint"])).assert_consumed()
            except (ValueError, KeyError, TypeError, AssertionError, t.errors.OpError) as e:
                why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                raise ToolkitError(f"{self.folder}: cannot restore the resume state (written for another model or "
                                   f"optimizer, or damaged: {why}); resume with the run's own settings, or {restart}"
                                   ) from None
            self._state = state
            return int(state["epoch"]) + 1

        @property
        def stopped(self) -> bool:
            return bool(self._state["stopped"])

        @property
        def improved(self) -> bool:
            return bool(self._state["improved"])

        def load_best(self) -> None:
            """Put the best epoch's weights (batch-norm statistics too; its optimizer state too) into the model."""
            self.sync()
            self._ckpt.read(str(self.folder / self._state["best_checkpoint"])).assert_consumed()

        def on_train_begin(self, logs=None):
            self._build()

        def on_epoch_begin(self, epoch, logs=None):
            if data_epoch is not None:
                data_epoch.assign(epoch)

        def on_epoch_end(self, epoch, logs=None):
            self.sync()  # the previous epoch's write is done, or its error (e.g. a full disk) is raised here
            state = dict(self._state, epoch=int(epoch), stopped=bool(model.stop_training), checkpoint=f"ckpt-{epoch}")
            value = (logs or {}).get(monitor)
            if value is not None and value < state["best"]:  # NaN never compares lower
                state.update(best=float(value), improved=True, best_checkpoint=state["checkpoint"])
            self._state = state
            if self._writer is None:
                self._persist(self._ckpt, state)
            else:
                self._copy()
                self._pending = self._writer.submit(self._persist, self._shadow, state)

        def on_train_end(self, logs=None):
            self.sync()
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None  # a later fit with this callback writes on the training thread

        def sync(self) -> None:
            """Wait for the write in flight; re-raises its error."""
            pending, self._pending = self._pending, None
            if pending is not None:
                pending.result()

        def _persist(self, ckpt, state: dict) -> None:
            name = state["checkpoint"]
            self.folder.mkdir(parents=True, exist_ok=True)
            for stale in self.folder.glob(f"{name}.*"):  # a killed run's files of this epoch: not to be trusted
                stale.unlink()
            ckpt.write(str(self.folder / name))
            _sync(self.folder, name)  # on the disk before state.json may name it
            write_json_atomic(self.folder / STATE, state, durable=True)
            keep = {name, state["best_checkpoint"]}
            for old in self.folder.glob("ckpt-*"):  # earlier epochs, and any write a kill interrupted
                if old.name.partition(".")[0] not in keep:
                    shutil.rmtree(old) if old.is_dir() else old.unlink()

    return _ResumeState()


def _sync(folder: Path, name: str) -> None:
    """fsync a checkpoint's files and then the folder that lists them."""
    for path in [*folder.glob(f"{name}.*"), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ResumableEarlyStopping(monitor: str, patience: int, rows: list[dict]):  # noqa: N802 (lazy tf_keras class)
    """Keras' EarlyStopping, first replaying the epochs a resumed run already finished (``rows``).

    Without the replay a resumed run would forget how long the loss has not improved and train
    longer than the same run uninterrupted.
    """
    from toolkit._keras import keras

    class _EarlyStopping(keras().callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            for row in rows:
                if monitor in row:
                    if self._is_improvement(row[monitor], self.best):
                        self.best, self.wait = row[monitor], 0
                    else:
                        self.wait += 1

    return _EarlyStopping(monitor=monitor, patience=patience)
