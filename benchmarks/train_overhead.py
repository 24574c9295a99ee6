"""Seconds per epoch of ``toolkit train`` against plain ``model.fit``, epochs interleaved.

    python -m benchmarks.train_overhead [MODEL] [--data SPEC] [--epochs N] [--batch-size N] [--image-size N]
                                        [--fast] [--rounds N]

Both sides train the same architecture from the same seed on the same images and validate on the
same held-out images; the plain side gets them as in-memory numpy arrays with no callbacks (the
fastest thing Keras offers), the toolkit side goes through its tf.data pipeline and all its
callbacks (resume state, best epoch, CSV, TensorBoard). An epoch is timed from its start to the end
of the last callback.

Epoch times on a shared machine drift by ±5 % over minutes, more than the difference measured, so the
two sides run in one process, in two threads that take turns epoch by epoch (toolkit, plain, toolkit,
plain, ...; a round later plain goes first): neighbouring epochs see the same machine. The resume state is
written on the training thread at each epoch's end, so the toolkit's epoch time includes it. The first epoch
traces graphs on both sides, so the later epochs are compared: fastest against fastest and median against median.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import cli
from toolkit.config import TrainConfig
from toolkit.progress import progress


class _OtherSideFailed(RuntimeError):
    pass


class _Turns:
    """Epochs in a fixed order of sides; a side that fails breaks the order so the other does not wait forever."""

    def __init__(self, order: list[str]):
        self._order, self._at, self._broken = order, 0, False
        self._cv = threading.Condition()

    def wait_for(self, side: str) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self._broken or self._at >= len(self._order) or self._order[self._at] == side)
            if self._broken:
                raise _OtherSideFailed("the other side of the benchmark failed")

    def done(self) -> None:
        with self._cv:
            self._at += 1
            self._cv.notify_all()

    def wait_all(self) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self._broken or self._at >= len(self._order))

    def break_(self) -> None:
        with self._cv:
            self._broken = True
            self._cv.notify_all()


def _epoch_clock(turns: _Turns, side: str):
    """A callback that takes its side's turns and records wall seconds per epoch; put it last so it sees the others."""
    from toolkit._keras import keras

    class Clock(keras().callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            turns.wait_for(side)
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t0)
            turns.done()
            if epoch + 1 == self.params["epochs"]:  # what this side does after training waits for the other side
                turns.wait_all()

    return Clock()


def _plain_fit(config: TrainConfig, train_xy, val_xy, n_classes: int, callbacks: list) -> None:
    from toolkit._keras import keras
    from toolkit.models import build_model
    from toolkit.train.fit import compile_model

    keras().utils.set_random_seed(config.seed)
    x, y = train_xy
    model = build_model(config.model, x.shape[1:], n_classes, **config.model_kwargs)
    compile_model(model, n_classes, config.optimizer, config.lr)
    model.fit(x, y, batch_size=config.batch_size, epochs=config.epochs, shuffle=True,
              validation_data=val_xy, verbose=0, callbacks=callbacks)


def benchmark_training(model: str, data: str, *, epochs: int = 3, batch_size: int = 32,
                       image_size: int | None = None, deterministic: bool = True, rounds: int = 1) -> dict:
    """Time ``epochs`` epochs both ways, interleaved, ``rounds`` times; per-epoch seconds and later-epoch ratios."""
    from toolkit.data import load_data
    from toolkit.models import get_spec
    from toolkit.train.fit import seed_everything, train

    size = image_size or get_spec(model).default_input
    ds = load_data(data, size)
    config = TrainConfig(model=model, data=data, out="run", epochs=epochs, batch_size=batch_size, image_size=size,
                         patience=0, deterministic=deterministic)
    splits = ds.split(seed=config.seed, val=config.val, test=config.test)
    (x, y), (vx, vy) = splits.train.numpy(), splits.val.numpy()
    train_xy, val_xy = (x.astype(np.float32), y), (vx.astype(np.float32), vy)
    seed_everything(config.seed, deterministic)  # op determinism is process-wide: both sides, from the start

    def one_round(first: str) -> dict[str, list[float]]:
        sides = ["toolkit", "plain"] if first == "toolkit" else ["plain", "toolkit"]
        turns = _Turns(sides * epochs)
        clocks = {"toolkit": _epoch_clock(turns, "toolkit"), "plain": _epoch_clock(turns, "plain")}
        started = threading.Event()  # the second side sets up while the first one's first epoch runs

        def toolkit_side() -> None:
            if first != "toolkit":
                started.wait()
            with tempfile.TemporaryDirectory() as tmp:
                train(dataclasses.replace(config, out=str(Path(tmp) / "run")), data=ds,
                      extra_callbacks=(_Starter(started), clocks["toolkit"]))

        def plain_side() -> None:
            if first != "plain":
                started.wait()
            _plain_fit(config, train_xy, val_xy, len(ds.labels), [_Starter(started), clocks["plain"]])

        # Keras saves and loads model.keras correctly only on the main thread: the toolkit side runs there.
        with ThreadPoolExecutor(1, thread_name_prefix="plain-fit") as pool:
            plain = pool.submit(_guarded, plain_side, turns, started)
            try:
                _guarded(toolkit_side, turns, started)
            except _OtherSideFailed:
                plain.result()  # the plain side's own error
                raise
            plain.result()
        return {side: clock.times for side, clock in clocks.items()}

    later = slice(1, None) if epochs > 1 else slice(None)
    times: dict[str, list[list[float]]] = {"toolkit": [], "plain": []}
    with progress("timing both sides", total=rounds, unit="rounds") as shown:
        for r in range(rounds):
            result = one_round("toolkit" if r % 2 == 0 else "plain")
            for side in times:
                times[side].append(result[side])
            shown.advance()
    a = np.array([t for run in times["toolkit"] for t in run[later]])
    b = np.array([t for run in times["plain"] for t in run[later]])
    paired, low, high = paired_ratio(a, b)
    return {
        "model": model, "data": data, "train_images": len(splits.train), "val_images": len(splits.val),
        "batch_size": batch_size, "deterministic": deterministic, "rounds": rounds,
        "toolkit_epoch_s": times["toolkit"], "plain_fit_epoch_s": times["plain"],
        "ratio": float(a.min() / b.min()), "median_ratio": float(np.median(a) / np.median(b)),
        "paired_ratio": paired, "paired_ratio_95": (low, high),
    }


def paired_ratio(a: np.ndarray, b: np.ndarray, resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """The median of ``a[i] / b[i]`` over epoch pairs that ran back to back, with a 95 % bootstrap interval.

    Pairing cancels the machine's slow drift; the interval shows how much the epoch-to-epoch noise
    leaves undecided (an interval that holds 1 means no difference could be measured).
    """
    ratios = np.asarray(a, dtype=float) / np.asarray(b, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(ratios), size=(resamples, len(ratios)))
    low, high = np.percentile(np.median(ratios[picks], axis=1), [2.5, 97.5])
    return float(np.median(ratios)), float(low), float(high)


def _guarded(side, turns: _Turns, started: threading.Event) -> None:
    try:
        side()
    except BaseException:
        turns.break_()
        started.set()
        raise


def _Starter(started: threading.Event):  # noqa: N802 (lazy tf_keras class)
    """A callback that tells the waiting side, at the first epoch's start, that it may set up now."""
    from toolkit._keras import keras

    class Starter(keras().callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            started.set()

    return Starter()



def format_training(r: dict) -> str:
    """The table and ratios of a :func:`benchmark_training` result."""
    lines = [f"{r['model']} on {r['data']}: {r['train_images']} training + {r['val_images']} validation images, "
             f"batch {r['batch_size']}, deterministic={r['deterministic']}, {r['rounds']} round(s)",
             f"{'round':>5} {'epoch':>5} {'toolkit train s':>16} {'plain fit s':>12}"]
    for n, (ta, tb) in enumerate(zip(r["toolkit_epoch_s"], r["plain_fit_epoch_s"]), start=1):
        for i, (a, b) in enumerate(zip(ta, tb), start=1):
            lines.append(f"{n:>5} {i:>5} {a:>16.2f} {b:>12.2f}")
    low, high = r["paired_ratio_95"]
    lines.append(f"ratio toolkit/plain, epochs after each run's first: fastest {r['ratio']:.3f}, "
                 f"median {r['median_ratio']:.3f}, paired {r['paired_ratio']:.3f} "
                 f"(95 % interval {low:.3f}-{high:.3f})  (<= 1: no slower)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run the benchmark, print its table."""
    parser = cli.parser("train_overhead", __doc__)
    parser.add_argument("model", nargs="?", default="resnet50", help="registered model name (default resnet50)")
    parser.add_argument("--data", default="synthetic:signs", help="data spec to train on (default synthetic:signs)")
    parser.add_argument("--epochs", type=cli.positive(int), default=3,
                        help="epochs per side; those after the first (graph tracing) are compared (default 3)")
    parser.add_argument("--batch-size", type=cli.positive(int), default=32, help="default 32")
    parser.add_argument("--image-size", type=cli.positive(int), help="default: the model's own input size")
    parser.add_argument("--fast", action="store_true", help="TensorFlow's op determinism off (both sides)")
    parser.add_argument("--rounds", type=cli.positive(int), default=1,
                        help="repeat both sides, alternating which goes first; epochs are pooled (default 1)")
    ns = parser.parse_args(argv)
    r = benchmark_training(ns.model, ns.data, epochs=ns.epochs, batch_size=ns.batch_size, image_size=ns.image_size,
                           deterministic=not ns.fast, rounds=ns.rounds)
    print(format_training(r))
    return 0


if __name__ == "__main__":
    cli.run(main)
