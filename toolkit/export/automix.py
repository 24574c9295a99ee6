"""Automatic mixed precision in an export: the selection split, the formats' plugs, choosing and reporting.

The format-independent pieces (ranking, bisection, the paired interval) are in :mod:`toolkit.export.mixed`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from toolkit.export.mixed import SENSITIVITY_IMAGES, explain_lines, macs, rank, report, search

HOLD_BACK = 0.2  # share of train held back for selection when there is no separate val split


def hold_back(train, seed: int):
    """(calibration pool, selection split): a stratified fifth of train for choosing layers, never calibrated on."""
    from toolkit.data.split import take_indices

    n = len(train)
    k = max(1, int(round(HOLD_BACK * n))) if n > 1 else 0
    if not k:
        return train, None
    chosen = take_indices(train.y, k, seed + 1)
    rest = np.setdiff1d(np.arange(n), chosen)
    return train.subset(rest), train.subset(chosen, name="train-held-back")


@dataclass(frozen=True)
class Plug:
    """What a format provides for mixed precision (see the module docstring)."""

    sensitivity: Callable  # (ctx, images) -> {Keras layer name: error}
    build: Callable  # (ctx, path, float_layers: tuple) -> None: writes the int8 file


def plug(fmt) -> Plug | None:
    """The mixed-precision functions of ``fmt`` (int8 files only), or None when its exporter has none.

    Looked up when needed, so a format whose module lacks them (TFLite before its part lands) still exports.
    """
    if fmt.quantization != "int8":
        return None
    if fmt.name == "onnx":
        from toolkit.export import onnx as onnx_export

        return Plug(onnx_export.sensitivity, onnx_export.build_int8)
    if fmt.name == "tflite":
        import inspect

        from toolkit.export import tflite

        sens, convert = getattr(tflite, "sensitivity", None), tflite.convert
        if sens is None or "float_layers" not in inspect.signature(convert).parameters:
            return None

        def tflite_sensitivity(ctx, images):
            return sens(ctx.model, ctx.calibration, images)

        def tflite_build(ctx, path, float_layers):
            from pathlib import Path

            Path(path).write_bytes(convert(ctx.model, "int8", ctx.calibration, uint8_io=ctx.config.uint8_io,
                                           float_layers=tuple(float_layers)))

        return Plug(tflite_sensitivity, tflite_build)
    return None


@dataclass
class Selection:
    """The images layers are chosen on (never the split the gate judges on), with the float model's outputs."""

    name: str  # "val", or "train-held-back" when there is no separate val split
    x: np.ndarray
    y: np.ndarray
    reference: np.ndarray  # float Keras probabilities


def choose(ctx, fmt, plugged: Plug, path, selection: Selection, *, needed: bool, max_drop: float, log,
           wrap: Callable | None = None):
    """Rank ``fmt``'s layers on ``selection``; when ``needed``, rebuild ``path`` with the fewest float layers
    whose answers agree with float on all but ``max_drop`` % of the selection images.

    ``wrap``: turns a file's runner into one giving the model's probabilities (a chain's base file, whose output
    is features, followed by its head); None when the file's output is the answer.

    Returns:
        (the manifest's mixed-precision record, the new file's runner or None when ``path`` is unchanged,
        or None for the runner and a record with ``failed`` when even every ranked layer in float fails).
    """
    import shutil
    from pathlib import Path

    from toolkit.export.validate import classes, predict
    from toolkit.export.validate import load_runner as _load

    def load_runner(file):
        return _load(file) if wrap is None else wrap(_load(file))

    path = Path(path)
    take = _take(selection.y, SENSITIVITY_IMAGES)
    t0 = time.perf_counter()
    ranking = rank(plugged.sensitivity(ctx, selection.x[take]), macs(ctx.model))
    record = {**report(ranking, selection.name), "selection_n": int(len(selection.y)), "candidates": len(ranking),
              "sensitivity_images": int(len(take)), "sensitivity_seconds": round(time.perf_counter() - t0, 1)}
    if ctx.config.explain:
        for line in explain_lines(fmt.filename, ranking):
            log(line)
    if not needed:
        return record, None
    ref_class = classes(selection.reference)
    built = {}

    def build(layers):
        out = ctx.workdir / f"mixed-{len(layers)}{fmt.suffix}"
        plugged.build(ctx, out, layers)
        built[len(layers)] = out
        return load_runner(out)

    measured = []

    def changed(runner) -> float:
        return round(100.0 * float(np.mean(classes(predict(runner, selection.x)) != ref_class)), 3)

    def accept(runner):
        measured.append(changed(runner))
        return measured[-1] <= max_drop

    t0 = time.perf_counter()
    found = search(ranking, build, accept, low=1)
    record.update(search_seconds=round(time.perf_counter() - t0, 1),
                  tried=[{"float_layers": k, "passed": ok, "changed_percent": pct}
                         for (k, ok), pct in zip(found.tried, measured, strict=True)])
    if found.k is None:
        record["failed"] = (f"answers changed against float on {changed(load_runner(path)):.1f}% of the "
                            f"{len(selection.y)} {selection.name} images with plain int8 and on {measured[-1]:.1f}% "
                            f"with all {len(ranking)} conv/dense layers in float (allowed: {max_drop:g}%)")
        return record, None
    plain = ctx.workdir / f"plain-int8{fmt.suffix}"
    shutil.copyfile(path, plain)
    shutil.copyfile(built[found.k], path)
    image = selection.x[:1]
    record.update(float_layers=[s.layer for s in ranking[: found.k]],
                  float_mac_share=round(sum(s.mac_share for s in ranking[: found.k]), 4),
                  bytes={"int8": plain.stat().st_size, "mixed": path.stat().st_size},
                  p50_ms_1thread=p50_ms_in_turns({"int8": plain, "mixed": path,
                                                  # exported just before (float files come first): the ratio
                                                  "float": path.with_name("model" + fmt.suffix)}, image))
    return record, load_runner(path)


def _take(y: np.ndarray, n: int) -> np.ndarray:
    from toolkit.data.split import take_indices

    y = np.asarray(y).reshape(-1)
    return np.arange(len(y)) if len(y) <= n else take_indices(y, n, 0)


def summary(filename: str, record: dict, plain: dict, final: dict) -> str:
    """One log line: what mixed precision kept in float and what that cost."""
    p50, size = record["p50_ms_1thread"], record["bytes"]
    ratio = f", int8/fp32 {p50['mixed'] / p50['float']:.2f}" if p50.get("float") else ""
    builds = len(record["tried"])
    return (f"  {filename}: plain int8 drop {plain['drop']:.1f} points {_interval(plain)}; mixed precision kept "
            f"{len(record['float_layers'])} of {record['candidates']} layers float "
            f"({100 * record['float_mac_share']:.0f}% of MACs; chosen on {record['selection_n']} "
            f"{record['selection_split']} images, {builds} build{'s' * (builds != 1)}): drop {final['drop']:.1f} "
            f"points {_interval(final)}; p50 1 thread {p50['int8']:.2f} -> {p50['mixed']:.2f} ms{ratio}; "
            f"{size['int8'] / 1024:.0f} -> {size['mixed'] / 1024:.0f} KB")


def _interval(v: dict) -> str:
    lo_hi = v.get("drop_95")
    return "" if not lo_hi else f"(95% interval {lo_hi[0]:.1f} to {lo_hi[1]:.1f})"


def selection_split(model, splits, held_out, formats, config):
    """(the split calibration draws from, a :class:`LazySelection` or None).

    Mixed precision chooses layers on the val split; when val is what the gate judges (no test split) or is
    empty, on a stratified fifth of train that calibration never sees.
    """
    if not any(f.quantization == "int8" for f in formats) or not (config.mixed_precision == "auto"
                                                                  or config.explain):
        return splits.train, None
    pool, split = splits.train, splits.val
    if not len(split) or split is held_out:
        pool, split = hold_back(splits.train, config.seed)
    if split is None or not len(split):
        return pool, None
    return pool, LazySelection(model, split)


class LazySelection:
    """The selection split, loaded and run through the float model only when a file needs it."""

    def __init__(self, model, split):
        self.model, self.split, self.name, self._value = model, split, split.name, None

    def __call__(self) -> Selection:
        if self._value is None:
            from toolkit._keras import predict_array

            x, y = self.split.numpy()
            x = x.astype(np.float32)
            reference = predict_array(self.model, x, 32).reshape(len(x), -1)
            self._value = Selection(self.name, x, np.asarray(y).reshape(-1), reference)
        return self._value


def p50_ms_in_turns(files: dict, image: np.ndarray, repeats: int = 20) -> dict:
    """{name: median latency (ms) of one image at 1 thread} for the files that exist, timed in turns (a quick
    figure, not a benchmark, but int8/fp32 compares one moment of the machine)."""
    from toolkit.export.validate import load_runner
    from toolkit.timing import time_in_turns

    runners = {name: load_runner(f, threads=1) for name, f in files.items() if f.exists()}
    timed = time_in_turns(list(runners.values()), image, repeats, 0.0, warmup=1)
    return {name: round(t["p50_ms"], 3) for name, t in zip(runners, timed)}
