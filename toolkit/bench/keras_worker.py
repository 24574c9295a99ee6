"""Time the float Keras model in a child process, where TensorFlow's thread pools can still be sized.

TensorFlow fixes its intra-op thread count when it starts, so each thread count gets a fresh process.
The model is timed with ``model.predict`` on batches (never eager per-image calls).
"""

from __future__ import annotations

import numpy as np


def run(model_path: str, x: np.ndarray, threads: int, batches: tuple, repeats: int, min_seconds: float,
        x_degraded: np.ndarray | None = None) -> dict:
    from toolkit._keras import tf

    tf = tf()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from toolkit.train.runs import load_keras_model

    model = load_keras_model(model_path)
    probs = model.predict(x, batch_size=32, verbose=0).reshape(len(x), -1)
    degraded = None if x_degraded is None else model.predict(x_degraded, batch_size=32, verbose=0).reshape(len(x), -1)

    def call(xb):
        model.predict(xb, batch_size=len(xb), verbose=0)

    from toolkit.timing import time_batches, time_latency

    return {
        "probs": probs,
        "probs_degraded": degraded,
        "latency": time_latency(call, x, repeats, min_seconds),
        "throughput": time_batches(call, x, [b for b in batches if b > 1], min_seconds),
    }


def run_in_child(
    model_path: str, x: np.ndarray, threads: int, batches: tuple, repeats: int, min_seconds: float,
    x_degraded: np.ndarray | None = None,
) -> dict:
    """:func:`run` in a spawned process (fresh TensorFlow, its own thread count)."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(run, (model_path, x, threads, tuple(batches), repeats, min_seconds, x_degraded))
