"""The resume state of a training run, written after every epoch so a killed run loses only the epoch in flight.

A backup folder holds:

- ``slot-0.bin`` .. ``slot-2.bin``: every variable of the model, then of the optimizer, as raw bytes in
  a fixed order; three slots so one can be written while the other two hold the latest finished epoch
  and the best epoch so far (whose weights become ``model.keras`` at the end).
- ``state.json``: which slot is the latest and which the best, the last finished epoch, early
  stopping's verdict, the best monitored value, and the shapes and dtypes the slots hold.

An epoch's end writes the free slot and then replaces ``state.json`` atomically, so a kill at any moment
leaves the previous state whole: the slot being written is one no ``state.json`` points to. The slots
are rewritten in place, so after the first epochs every write lands on pages the system already holds.
For ResNet50 with Adam (283 MB) that costs ~0.1 s of one core per epoch, where TensorFlow's checkpoint
writer (even asynchronous) took ~1.1 s of CPU in the same measurement, competing with training.

A killed process keeps everything it wrote (the kernel holds it). A power cut is not covered: nothing is
fsynced, as with Keras' own BackupAndRestore.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.train.runs import write_json_atomic

STATE = "state.json"
SLOTS = ("slot-0.bin", "slot-1.bin", "slot-2.bin")
FORMAT = 1


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
    from toolkit._keras import keras

    class _ResumeState(keras().callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.folder = Path(folder)
            self._state = {"format": FORMAT, "epoch": -1, "stopped": False, "improved": False,
                           "best": math.inf if best is None else float(best), "latest": None, "best_slot": None}

        def restore(self) -> int:
            """Load the latest finished epoch's state, if any; returns the next epoch to train (0 if none)."""
            if (self.folder / "checkpoint").is_file():
                raise ToolkitError(f"{self.folder}: resume state in an older format; delete this folder and start "
                                   "the run again without --resume")
            path = self.folder / STATE
            if not path.is_file():
                return 0
            try:
                state = json.loads(path.read_text())
                latest = self.folder / state["latest"]
                layout = state["layout"]
            except (ValueError, KeyError, TypeError) as e:
                raise ToolkitError(f"{path}: damaged resume state ({e}); delete {self.folder} and start the run "
                                   "again without --resume") from None
            variables = self._variables(build=True)
            if layout != _layout(variables):
                raise ToolkitError(f"{self.folder}: the resume state was written for another model or optimizer; "
                                   "resume with the run's own settings, or delete the folder to start again")
            _read(latest, variables)
            self._state = state
            return int(state["epoch"]) + 1

        @property
        def stopped(self) -> bool:
            return bool(self._state["stopped"])

        @property
        def improved(self) -> bool:
            return bool(self._state["improved"])

        def load_best(self) -> None:
            """Put the best epoch's weights (batch-norm statistics too) into the model."""
            _read(self.folder / self._state["best_slot"], list(model.weights), partial=True)

        def on_epoch_begin(self, epoch, logs=None):
            if data_epoch is not None:
                data_epoch.assign(epoch)

        def on_epoch_end(self, epoch, logs=None):
            state = dict(self._state)
            slot = next(s for s in SLOTS if s not in (state["latest"], state["best_slot"]))
            variables = self._variables()
            self.folder.mkdir(parents=True, exist_ok=True)
            _write(self.folder / slot, variables)
            state.update(epoch=int(epoch), stopped=bool(model.stop_training), latest=slot, layout=_layout(variables))
            value = (logs or {}).get(monitor)
            if value is not None and value < state["best"]:  # NaN never compares lower
                state.update(best=float(value), improved=True, best_slot=slot)
            write_json_atomic(self.folder / STATE, state)
            self._state = state

        def _variables(self, build: bool = False) -> list:
            optimizer = model.optimizer
            if optimizer is None:
                return list(model.weights)
            if build and not getattr(optimizer, "_built", False):  # tf_keras sets it in build()
                optimizer.build(model.trainable_variables)  # slot variables must exist to be restored
            extra = optimizer.variables
            return list(model.weights) + list(extra() if callable(extra) else extra)

    return _ResumeState()


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


def _layout(variables) -> str:
    """A digest of every variable's shape and dtype, in order (names change with what else a process built)."""
    text = ";".join(f"{tuple(v.shape)}:{v.dtype.name}" for v in variables)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write(path: Path, variables) -> None:
    """Every variable's bytes into ``path``, in place when the file exists (its pages are then already held)."""
    try:
        with open(path, "r+b" if path.is_file() else "wb") as f:
            for v in variables:
                f.write(memoryview(np.ascontiguousarray(v.numpy()).reshape(-1).view(np.uint8)))
            f.truncate()
    except OSError as e:  # name the file: a full disk is reported with its folder
        raise OSError(e.errno, e.strerror, str(path)) from e


def _read(path: Path, variables, partial: bool = False) -> None:
    """Assign the values stored in ``path`` to ``variables`` (a prefix of the stored ones if ``partial``)."""
    arrays = []
    try:
        with open(path, "rb") as f:
            for v in variables:
                dtype = np.dtype(v.dtype.as_numpy_dtype)
                count = int(np.prod(v.shape, dtype=np.int64))
                a = np.fromfile(f, dtype=dtype, count=count)
                if a.size != count:
                    raise ToolkitError(f"{path}: truncated resume state; delete {path.parent} and start the run "
                                       "again without --resume")
                arrays.append(a.reshape(v.shape))
            if not partial and f.read(1):
                raise ToolkitError(f"{path}: the resume state holds more than this model; delete {path.parent} "
                                   "and start the run again without --resume")
    except OSError as e:
        raise ToolkitError(f"{path}: cannot read the resume state ({e.strerror}); delete {path.parent} and start "
                           "the run again without --resume") from None
    for v, a in zip(variables, arrays):
        v.assign(a)
