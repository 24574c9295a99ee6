"""The resume state of a training run, written after every epoch so a killed run loses only the epoch in flight.

A backup folder holds TensorFlow checkpoints (``ckpt-N.index``, ``ckpt-N.data-*``) of the model and its optimizer
after epoch N, and ``state.json``: the latest checkpoint, the best epoch's (whose weights become ``model.keras`` at
the end), the last finished epoch, early stopping's verdict and the best monitored value. At each epoch's end the
checkpoint is written and synced to the disk, and only then does ``state.json`` (replaced atomically, synced with
its folder entry) name it; other checkpoints go after that. A kill or a power cut at any moment therefore leaves
the last complete state. The write runs on the training thread; docs/training.md has what it costs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
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
            self._ckpt = None

        def _build(self) -> None:
            """The checkpoint's objects; called under the distribution strategy's scope, which must own them."""
            if self._ckpt is None:
                optimizer = model.optimizer
                if optimizer is not None and not getattr(optimizer, "_built", False):  # set by build()
                    optimizer.build(model.trainable_variables)  # slot variables must exist to be restored
                parts = {"model": model} if optimizer is None else {"model": model, "optimizer": optimizer}
                self._ckpt = t.train.Checkpoint(**parts)

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
                self._ckpt.read(str(self.folder / state["checkpoint"])).assert_existing_objects_matched()
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
            self._ckpt.read(str(self.folder / self._state["best_checkpoint"])).assert_existing_objects_matched()

        def on_train_begin(self, logs=None):
            self._build()

        def on_epoch_begin(self, epoch, logs=None):
            if data_epoch is not None:
                data_epoch.assign(epoch)

        def on_epoch_end(self, epoch, logs=None):
            state = dict(self._state, epoch=int(epoch), stopped=bool(model.stop_training), checkpoint=f"ckpt-{epoch}")
            value = (logs or {}).get(monitor)
            if value is not None and value < state["best"]:  # NaN never compares lower
                state.update(best=float(value), improved=True, best_checkpoint=state["checkpoint"])
            self.folder.mkdir(parents=True, exist_ok=True)
            self._ckpt.write(str(self.folder / state["checkpoint"]))
            _sync(self.folder, state["checkpoint"])  # on the disk before state.json may name it
            write_json_atomic(self.folder / STATE, state, durable=True)
            self._state = state
            keep = {state["checkpoint"], state["best_checkpoint"]}
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
