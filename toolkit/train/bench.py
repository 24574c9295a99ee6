"""``toolkit train-benchmark``: seconds per epoch of ``toolkit train`` against plain ``model.fit``.

Both sides train the same architecture from the same seed on the same training images; the plain
side gets them as in-memory numpy arrays (the fastest thing Keras offers), the toolkit side through
its tf.data pipeline and callbacks (checkpoint, backup, CSV, TensorBoard). The second epoch is the
one compared: the first includes graph tracing on both sides.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from toolkit.config import TrainConfig


def _plain_fit_epoch_times(config: TrainConfig, x: np.ndarray, y: np.ndarray, n_classes: int) -> list[float]:
    from toolkit._keras import keras
    from toolkit.models import build_model
    from toolkit.train.fit import compile_model

    k = keras()
    k.utils.set_random_seed(config.seed)
    model = build_model(config.model, x.shape[1:], n_classes, **config.model_kwargs)
    compile_model(model, n_classes, config.optimizer, config.lr)
    times = []

    class Timer(k.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    model.fit(x.astype(np.float32), y, batch_size=config.batch_size, epochs=config.epochs, shuffle=True,
              verbose=0, callbacks=[Timer()])
    return times


def benchmark_training(model: str, data: str, *, epochs: int = 2, batch_size: int = 32,
                       image_size: int | None = None, deterministic: bool = True) -> dict:
    """Time ``epochs`` epochs both ways; returns per-epoch seconds and the ratio of the last epochs."""
    from toolkit.data import load_data
    from toolkit.models import get_spec
    from toolkit.train.fit import epoch_times, train
    from toolkit.train.runs import read_history

    size = image_size or get_spec(model).default_input
    ds = load_data(data, size)
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(model=model, data=data, out=str(Path(tmp) / "run"), epochs=epochs,
                             batch_size=batch_size, image_size=size, patience=0, deterministic=deterministic)
        run = train(config, data=ds)
        toolkit_times = epoch_times(read_history(run.path)).tolist()
    splits = ds.split(seed=config.seed, val=config.val, test=config.test)
    x, y = splits.train.numpy()
    plain_times = _plain_fit_epoch_times(replace(config, out=""), x, y, len(ds.labels))
    return {
        "model": model, "data": data, "train_images": int(len(x)), "batch_size": batch_size,
        "deterministic": deterministic,
        "toolkit_epoch_s": toolkit_times, "plain_fit_epoch_s": plain_times,
        "ratio_last_epoch": toolkit_times[-1] / plain_times[-1],
    }
