"""The resume state of a training run, written after every epoch so a killed run loses only the epoch in flight.

A backup folder holds:

- ``slot-0.bin`` .. ``slot-2.bin``: every variable of the model, then of the optimizer, as raw bytes in
  a fixed order; three slots so one can be written while the other two hold the latest finished epoch
  and the best epoch so far (whose weights become ``model.keras`` at the end).
- ``state.json``: which slot is the latest and which the best, the last finished epoch, early
  stopping's verdict, the best monitored value, and a digest of the shapes and dtypes the slots hold.

Once an epoch's training steps are done (when its validation pass begins, or at its end without
validation data) every variable is read and copied once, straight from TensorFlow's buffers (a zero-copy DLPack
view of each value), into one page-aligned staging buffer that lives as long as training. The copy
runs on a background thread while validation runs (validation does not change the weights): one
memcpy of the whole state (~0.02 s for ResNet50 with Adam, 283 MB), with no fresh memory to fault in,
and no buffer left shared with a variable (the optimizer's next update would have to copy it). At the
epoch's end the same thread writes the staging buffer to the free slot with O_DIRECT, where the file
system allows it, and then replaces ``state.json`` atomically: the bytes go to the disk by DMA,
without passing through the page cache and with almost no CPU, while the next epoch trains. A kill
at any moment leaves the previous state whole, since no ``state.json`` points to the slot being written.

Measured here on ResNet50 with Adam: TensorFlow's checkpoint writer took ~1.1 s of CPU per epoch;
buffered writes plus the kernel's later writeback made epochs ~10 % slower than the same state on a
RAM disk; copying each value out with ``.numpy()`` (fresh memory every epoch) slowed the next epoch's
first step by ~0.13 s. Reading and copying on the training thread at the epoch's end took ~0.04 s;
moved to the writer thread during validation, ~3 ms per epoch is left on the training thread.

The staging buffer costs one copy of the state in memory for the length of training. The slot is
synced to the disk before ``state.json`` names it, and ``state.json`` and its folder entry are synced
too, so a power cut, like a kill, leaves the last complete state.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.train.runs import write_json_atomic

STATE = "state.json"
SLOTS = ("slot-0.bin", "slot-1.bin", "slot-2.bin")
FORMAT = 1
BLOCK = 4096  # O_DIRECT writes whole, aligned blocks: a slot is padded to a multiple of this
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
    from toolkit._keras import keras

    class _ResumeState(keras().callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.folder = Path(folder)
            self._state = {"format": FORMAT, "epoch": -1, "stopped": False, "improved": False,
                           "best": math.inf if best is None else float(best), "latest": None, "best_slot": None}
            self._staging: _Staging | None = None  # every variable's bytes at the last epoch's end
            self._packing: Future | None = None  # the copy into it, under way
            self._layout = ""  # the digest of those variables' shapes and dtypes
            self._writer: ThreadPoolExecutor | None = None
            self._pending: Future | None = None

        def restore(self) -> int:
            """Load the latest finished epoch's state, if any; returns the next epoch to train (0 if none)."""
            restart = RESTART.format(folder=self.folder)
            if (self.folder / "checkpoint").is_file():
                raise ToolkitError(f"{self.folder}: resume state in an older format; {restart}")
            path = self.folder / STATE
            if not path.is_file():
                return 0
            try:
                state = json.loads(path.read_text())
                latest, layout = self.folder / state["latest"], state["layout"]
            except (ValueError, KeyError, TypeError) as e:
                raise ToolkitError(f"{path}: damaged resume state ({e}); {restart}") from None
            variables = self._variables(build=True)
            if layout != _layout(variables):
                raise ToolkitError(f"{self.folder}: the resume state was written for another model or optimizer; "
                                   f"resume with the run's own settings, or {restart}")
            _read(latest, variables, restart)
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
            self.sync()
            _read(self.folder / self._state["best_slot"], list(model.weights), RESTART.format(folder=self.folder),
                  partial=True)

        def on_epoch_begin(self, epoch, logs=None):
            if data_epoch is not None:
                data_epoch.assign(epoch)

        def on_test_begin(self, logs=None):  # fit's validation pass: the epoch's training steps are done
            if self._packing is None:  # validation leaves the weights be: copy them while it runs
                self._start_pack()

        def on_epoch_end(self, epoch, logs=None):
            self.sync()  # the previous epoch's write is done, or its error (e.g. a full disk) is raised here
            if self._packing is None:  # no validation data
                self._start_pack()
            packing, self._packing = self._packing, None
            packing.result()
            state = dict(self._state)
            slot = next(s for s in SLOTS if s not in (state["latest"], state["best_slot"]))
            state.update(epoch=int(epoch), stopped=bool(model.stop_training), latest=slot, layout=self._layout)
            value = (logs or {}).get(monitor)
            if value is not None and value < state["best"]:  # NaN never compares lower
                state.update(best=float(value), improved=True, best_slot=slot)
            self._state = state
            self._pending = self._writer.submit(self._persist, slot, state)

        def _start_pack(self) -> None:
            """Copy the variables into the staging buffer on the writer thread, while validation runs.

            The writer thread copies once the previous epoch's write is out of the buffer. Under a distribution
            strategy the values are read here, on the training thread: reading a synced variable may be a
            collective step, which every worker must take in the same order.
            """
            from toolkit._keras import tf

            if self._staging is None:  # the variables are fixed once training has begun: lay out and digest once
                self._staging = _Staging(self._variables())
                self._layout = _layout(self._staging.variables)
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="resume-state")
            if tf().distribute.has_strategy():
                self._packing = self._writer.submit(self._staging.fill, self._staging.views())
            else:
                self._packing = self._writer.submit(self._staging.pack)

        def on_train_end(self, logs=None):
            self.sync()
            self._packing = None
            if self._writer is not None:
                self._writer.shutdown()
            if self._staging is not None:
                self._staging.close()
            self._writer = self._staging = None

        def sync(self) -> None:
            """Wait for the write in flight; re-raises its error (e.g. a full disk)."""
            pending, self._pending = self._pending, None
            if pending is not None:
                pending.result()

        def _persist(self, slot: str, state: dict) -> None:
            """Write the staging buffer to ``slot``, then point ``state.json`` at it (on the writer thread)."""
            self.folder.mkdir(parents=True, exist_ok=True)
            self._staging.write(self.folder / slot)
            write_json_atomic(self.folder / STATE, state, durable=True)

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


class _Staging:
    """One page-aligned buffer laid out for ``variables``: their bytes, in order, padded to whole blocks."""

    def __init__(self, variables):
        self.variables = list(variables)  # fixed once training has begun
        self.sizes = [_itemsize(v) * int(np.prod(v.shape, dtype=np.int64)) for v in self.variables]
        self.size = max(BLOCK, -(-sum(self.sizes) // BLOCK) * BLOCK)
        self._buffer = mmap.mmap(-1, self.size)  # anonymous: page-aligned, as O_DIRECT needs
        if hasattr(mmap, "MADV_HUGEPAGE"):  # fewer page faults when it is first filled
            self._buffer.madvise(mmap.MADV_HUGEPAGE)
        self._bytes = np.frombuffer(self._buffer, dtype=np.uint8)

    def views(self) -> list[np.ndarray]:
        """Every variable's current value as bytes, viewed in TensorFlow's own buffers (nothing copied yet)."""
        return [_host_bytes(v.value()) for v in self.variables]

    def fill(self, views: list) -> None:
        """Copy ``views`` in, in order (one memcpy each); empties the list, so no buffer stays shared."""
        at = 0
        for data, size in zip(views, self.sizes):
            if data.size != size:
                raise ValueError(f"a variable holds {data.size} bytes where {size} were sized")
            self._bytes[at:at + size] = data
            at += size
        self._bytes[at:] = 0
        views.clear()  # a variable's buffer still referenced here would be copied by the optimizer's next update

    def pack(self) -> None:
        """Copy every variable's current value in."""
        self.fill(self.views())

    def write(self, path: Path) -> None:
        """Write the buffer to ``path``; O_DIRECT if the file system takes it. Errors name the file."""
        try:
            try:
                self._write_file(path, getattr(os, "O_DIRECT", 0))
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self._write_file(path, 0)  # tmpfs and some others refuse O_DIRECT, at open or at write
        except OSError as e:  # name the file: a full disk is reported with its folder
            raise OSError(e.errno, e.strerror, str(path)) from e

    def _write_file(self, path: Path, flags: int, chunk: int = 64 << 20) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
        try:
            with memoryview(self._buffer) as view:
                at = 0
                while at < self.size:
                    at += os.write(fd, view[at:min(at + chunk, self.size)])
            os.ftruncate(fd, self.size)
            os.fdatasync(fd)  # on the disk (not in its cache) before state.json may point here
        finally:
            os.close(fd)

    def close(self) -> None:
        del self._bytes  # the array is a view of the mapping: it must go before the mapping can
        self._buffer.close()


class _DLPack:
    """Hands numpy a DLPack capsule from TensorFlow, so the array shares the tensor's memory."""

    def __init__(self, capsule):
        self._capsule = capsule

    def __dlpack__(self, **_):
        return self._capsule

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0


def _host_bytes(value) -> np.ndarray:
    """A tensor's bytes as a flat uint8 array: a view of its memory where DLPack can give one, else a copy."""
    return np.ascontiguousarray(_host_array(value)).reshape(-1).view(np.uint8)


def _host_array(value) -> np.ndarray:
    from toolkit._keras import tf

    if "CPU" in value.device:  # a GPU tensor's memory is not the host's: .numpy() copies it over
        try:
            return np.from_dlpack(_DLPack(tf().experimental.dlpack.to_dlpack(value)))
        except (TypeError, ValueError, BufferError, RuntimeError, tf().errors.OpError):  # a dtype DLPack lacks
            pass
    return value.numpy()


def _itemsize(variable) -> int:
    return np.dtype(variable.dtype.as_numpy_dtype).itemsize


def _read(path: Path, variables, restart: str, partial: bool = False) -> None:
    """Assign the values stored in ``path`` to ``variables`` (a prefix of the stored ones if ``partial``)."""
    arrays = []
    try:
        with open(path, "rb") as f:
            for v in variables:
                count = int(np.prod(v.shape, dtype=np.int64))
                a = np.fromfile(f, dtype=np.dtype(v.dtype.as_numpy_dtype), count=count)
                if a.size != count:
                    raise ToolkitError(f"{path}: truncated resume state; {restart}")
                arrays.append(a.reshape(v.shape))
            if not partial and len(f.read(BLOCK)) == BLOCK:  # more than the padding: another model's state
                raise ToolkitError(f"{path}: the resume state holds more than this model; {restart}")
    except OSError as e:
        raise ToolkitError(f"{path}: cannot read the resume state ({e.strerror}); {restart}") from None
    for v, a in zip(variables, arrays):
        v.assign(a)
