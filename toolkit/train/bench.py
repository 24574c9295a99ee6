"""``toolkit train-benchmark``: seconds per epoch of ``toolkit train`` against plain ``model.fit``.

Both sides train the same architecture from the same seed on the same images and validate on the
same held-out images; the plain side gets them as in-memory numpy arrays with no callbacks (the
fastest thing Keras offers), the toolkit side goes through its tf.data pipeline and all its
callbacks (resume state, best epoch, CSV, TensorBoard). An epoch is timed from its start to the end
of the last callback, so resume-state writes count. The first epoch traces graphs on both sides, so
the later epochs are compared: fastest against fastest (least disturbed by a noisy machine) and median
against median. Epoch times on a shared machine drift by ±5 %, more than the difference measured,
so ``rounds`` > 1 alternates the sides (toolkit, plain, plain, toolkit, ...) and pools their epochs.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from toolkit.config import TrainConfig


def _epoch_clock():
    """A callback that records wall seconds per epoch; put it last so it sees the others' work."""
    from toolkit._keras import keras

    class Clock(keras().callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t0)

    return Clock()


def _plain_fit(config: TrainConfig, train_xy, val_xy, n_classes: int) -> list[float]:
    from toolkit._keras import keras
    from toolkit.models import build_model
    from toolkit.train.fit import compile_model

    keras().utils.set_random_seed(config.seed)
    x, y = train_xy
    model = build_model(config.model, x.shape[1:], n_classes, **config.model_kwargs)
    compile_model(model, n_classes, config.optimizer, config.lr)
    clock = _epoch_clock()
    model.fit(x.astype(np.float32), y, batch_size=config.batch_size, epochs=config.epochs, shuffle=True,
              validation_data=(val_xy[0].astype(np.float32), val_xy[1]), verbose=0, callbacks=[clock])
    return clock.times


def benchmark_training(model: str, data: str, *, epochs: int = 3, batch_size: int = 32,
                       image_size: int | None = None, deterministic: bool = True, rounds: int = 1) -> dict:
    """Time ``epochs`` epochs both ways, ``rounds`` times; per-epoch seconds and later-epoch ratios."""
    from toolkit.data import load_data
    from toolkit.models import get_spec
    from toolkit.train.fit import train

    size = image_size or get_spec(model).default_input
    ds = load_data(data, size)
    config = TrainConfig(model=model, data=data, out="run", epochs=epochs, batch_size=batch_size, image_size=size,
                         patience=0, deterministic=deterministic)
    splits = ds.split(seed=config.seed, val=config.val, test=config.test)

    def toolkit_side() -> list[float]:
        with tempfile.TemporaryDirectory() as tmp:
            clock = _epoch_clock()
            train(dataclasses.replace(config, out=str(Path(tmp) / "run")), data=ds, extra_callbacks=(clock,))
            return clock.times

    train_xy, val_xy = splits.train.numpy(), splits.val.numpy()

    def plain_side() -> list[float]:
        return _plain_fit(config, train_xy, val_xy, len(ds.labels))

    later = slice(1, None) if epochs > 1 else slice(None)
    times: dict[str, list[list[float]]] = {"toolkit": [], "plain": []}
    for r in range(rounds):
        order = (("toolkit", toolkit_side), ("plain", plain_side))
        for name, side in order if r % 2 == 0 else order[::-1]:
            times[name].append(side())
    a = [t for run in times["toolkit"] for t in run[later]]
    b = [t for run in times["plain"] for t in run[later]]
    return {
        "model": model, "data": data, "train_images": len(splits.train), "val_images": len(splits.val),
        "batch_size": batch_size, "deterministic": deterministic, "rounds": rounds,
        "toolkit_epoch_s": times["toolkit"], "plain_fit_epoch_s": times["plain"],
        "ratio": min(a) / min(b), "median_ratio": float(np.median(a) / np.median(b)),
    }
