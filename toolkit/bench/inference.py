"""``benchmark(config) -> dict``: size, accuracy, agreement, latency and throughput of an export folder.

One row per file in the folder and thread count, plus the float Keras model (timed in a child process
with ``model.predict``) as the baseline. With ``--degrade`` each file is also scored on a copy of the
test images through every camera degradation of :mod:`toolkit.degrade` (a fixed seed). Results go to
``benchmark.json``, ``benchmark.md`` and ``benchmark.png`` next to the files.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from toolkit.bench.config import BenchmarkConfig
from toolkit.degrade import DEGRADATIONS
from toolkit.errors import ToolkitError

DEGRADE_SEED = 0  # fixed: every run and every file sees the same degraded copy


def benchmark(config: BenchmarkConfig, log: Callable[[str], None] | None = None) -> dict:
    """Benchmark every file of ``config.folder``; returns the result written to ``benchmark.json``.

    Raises:
        ToolkitError: no manifest, a file whose sha256 differs from the manifest, or no data to score on.
    """
    from toolkit.bench.report import write_reports
    from toolkit.cpu import cpu_count, cpu_features, describe
    from toolkit.export.validate import load_runner, predict
    from toolkit.inference.manifest import load_manifest, sha256_file
    from toolkit.timing import time_batches, time_latency

    log = log or (lambda msg: print(msg, file=sys.stderr))
    folder = Path(config.folder)
    manifest = load_manifest(folder)
    features = cpu_features()
    log(describe(features))
    threads = tuple(dict.fromkeys(cpu_count() if t == "all" else t for t in config.threads))
    run_dir = _run_dir(folder, manifest, config.run)
    x, y, data_desc = _test_data(folder, manifest, config.data, config.strict, run_dir)
    log(f"scoring on {data_desc}")
    x_degraded = _degraded(x) if config.degrade else None
    keras_file = _keras_file(folder, manifest, run_dir)
    if config.keras and keras_file is None:  # said, not silently a table without its baseline
        log(f"keras baseline skipped: no source run to take it from; add --run RUN (the run folder {folder.name} was "
            f"exported from, {manifest.source_model.get('run', '?')!r}) or --no-keras")
    if config.keras and keras_file is not None and not _installed("tensorflow"):
        log(f"keras baseline skipped: {keras_file.name} needs TensorFlow (pip install 'door-camera-toolkit[train]')")
        keras_file = None
    rows, reference = [], None
    if config.keras and keras_file is not None:
        from toolkit.bench.keras_worker import run_in_child

        for t in threads:
            log(f"keras baseline, {t} thread(s) ...")
            res = run_in_child(str(keras_file), x, t, config.batch_size, config.repeats, config.min_seconds,
                               x_degraded)
            reference = res["probs"]
            rows.append(
                _row(
                    "keras",
                    "keras",
                    "none",
                    keras_file.stat().st_size,
                    t,
                    res["probs"],
                    res["probs"],
                    y,
                    res["latency"],
                    res["throughput"],
                    res["probs_degraded"],
                )
            )
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ToolkitError(f"{path}: listed in the manifest but missing; re-run 'toolkit export'")
        if sha256_file(path) != entry.sha256:
            raise ToolkitError(f"{path}: sha256 differs from the manifest (file changed); re-run 'toolkit export'")
        if entry.format == "tflite" and not _installed("ai_edge_litert"):  # a door install runs ONNX only
            log(f"{name}: skipped, TFLite files need ai-edge-litert (pip install 'door-camera-toolkit[train]')")
            continue
        chained = manifest.pipeline == "features" and entry.format == "onnx"
        if chained and name == manifest.serve:  # the head alone takes features: timed inside each base's row
            continue
        probs = degraded = None
        for t in threads:
            log(f"{name}, {t} thread(s) ...")
            runner = _chain_runner(folder, name, t) if chained else load_runner(path, threads=t)
            if probs is None:
                probs = predict(runner, x)
                degraded = predict(runner, x_degraded) if x_degraded is not None else None
            lat = time_latency(runner, x, config.repeats, config.min_seconds)
            thr = time_batches(runner, x, [b for b in config.batch_size if b > 1], config.min_seconds)
            rows.append(
                _row(
                    name,
                    entry.format,
                    entry.quantization,
                    entry.bytes,
                    t,
                    probs,
                    reference if reference is not None else probs,
                    y,
                    lat,
                    thr,
                    degraded,
                )
            )
            if entry.threshold is not None and manifest.output_kind == "sigmoid":
                rows[-1]["door"] = door_rates(entry.threshold, probs, degraded, y, manifest.data.get("kind"))
    if reference is None:
        log("no Keras baseline: agreement is not measured")
        for r in rows:
            r["agreement"] = None
    result = {
        "folder": str(folder),
        "model": manifest.model,
        "data": data_desc,
        "n": int(len(y)),
        "cpu": features,
        "threads": list(threads),
        "batches": list(config.batch_size),
        "degraded": None if x_degraded is None else {"operations": list(DEGRADATIONS), "seed": DEGRADE_SEED},
        "rows": rows,
    }
    result["written"] = write_reports(folder, result, log)
    return result


def _chain_runner(folder: Path, name: str, threads: int):
    """A features export's base file as the door runs it: image -> that base -> head.onnx (probabilities)."""
    from toolkit.inference.predictor import Predictor

    return Predictor(folder, name, threads=threads).run


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _degraded(x: np.ndarray) -> np.ndarray:
    """``x`` through every camera degradation, each image with its own fixed draw."""
    from toolkit.degrade import degrade

    return degrade(x, DEGRADATIONS, DEGRADE_SEED)


def _row(name, fmt, quant, size, threads, probs, reference, y, latency, throughput, degraded=None) -> dict:
    from toolkit.export.validate import classes

    pred, ref = classes(probs), classes(reference)
    return {
        "file": name,
        "format": fmt,
        "quantization": quant,
        "size_mb": round(size / 1e6, 4),
        "threads": threads,
        "accuracy": round(100 * float(np.mean(pred == y)), 2),
        "degraded_accuracy": None if degraded is None else round(100 * float(np.mean(classes(degraded) == y)), 2),
        "agreement": round(100 * float(np.mean(pred == ref)), 2),
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in latency.items()},
        "throughput": {b: round(v, 1) for b, v in throughput.items()},
    }


def door_rates(threshold: float, probs, degraded, y, kind: str | None) -> dict:
    """FAR and FRR at the manifest's threshold on these images (and their degraded copies), with 95 % intervals.

    These are figures on the benchmark's own images; the manifest's were measured on its test split.
    """
    from toolkit.export.validate import threshold_at

    y = np.asarray(y).reshape(-1)
    neg, pos = int(np.sum(y == 0)), int(np.sum(y == 1))

    def rates(p):
        r = threshold_at(threshold, np.asarray(p)[:, -1], y)
        return {"far": round(r["far"], 4), "far_95": r["far_95"], "frr": round(r["frr"], 4), "frr_95": r["frr_95"]}

    out = {"threshold": threshold, "negatives": neg, "positives": pos, "manifest_data": kind or "", **rates(probs)}
    if degraded is not None:
        out["degraded"] = rates(degraded)
    return out


def _run_dir(folder: Path, manifest, run: str | None) -> Path | None:
    """The source run: ``--run`` (checked: its model is the one the manifest's sha256 names), else where an
    older manifest's relative ``run`` path points, else None."""
    from toolkit.inference.manifest import sha256_file

    source = manifest.source_model
    if run:
        model = Path(run) / "model.keras"
        if not model.is_file():
            raise ToolkitError(f"--run {run}: no model.keras there; give the run folder {folder} was exported from")
        if source.get("sha256") and sha256_file(model) != source["sha256"]:
            raise ToolkitError(f"--run {run}: its model.keras is not the one {folder} was exported from (sha256 "
                               f"differs from the manifest's; that was run {source.get('run', '?')!r})")
        return Path(run)
    old = source.get("path") and source.get("run")  # manifests before names + sha256: paths relative to the folder
    return folder / old if old and (folder / old).is_dir() else None


def _keras_file(folder: Path, manifest, run_dir: Path | None) -> Path | None:
    if run_dir is None:
        return None
    path = run_dir / manifest.source_model.get("name", "model.keras")
    return path if path.is_file() else None


def _test_data(folder: Path, manifest, data: str | None, strict: bool = False, run_dir: Path | None = None):
    """(x float32, y, description): every image of ``data``, or without it the source run's test split."""
    if data:
        from toolkit.bench.accuracy import load_scored

        split = load_scored(data, manifest.input.size, tuple(manifest.labels), every=True, strict=strict)
        x, y = split.numpy()
        return x.astype(np.float32), y, f"{data}, every image ({len(y)} images)"
    if run_dir is None:
        raise ToolkitError(f"{folder}: pass --data SPEC to benchmark on, or --run RUN (the run folder it was exported "
                           f"from, {manifest.source_model.get('run', '?')!r}) to use that run's test split")
    from toolkit.train.runs import load_run

    splits = load_run(run_dir).splits()
    split = splits.test if len(splits.test) else splits.val
    x, y = split.numpy()
    spec = manifest.data.get("spec")
    return x.astype(np.float32), y, f"{spec}, the source run's {split.name} split ({len(y)} images)"
