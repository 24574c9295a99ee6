"""Running a pipeline: each step calls the library function of its CLI command, and steps whose
inputs have not changed are skipped.

Content addressing: a step's key hashes its own settings, the keys of the steps it depends on, and a
cheap fingerprint of the data source (file sizes and modification times, not pixels). Training runs
live in ``runs/pipelines/NAME/<step>-<key>``, so a changed setting starts a new folder and an
unfinished folder with the same key is resumed. A crash therefore costs at most the epoch in flight.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.pipeline.spec import SECTIONS, Pipeline

log = logging.getLogger("toolkit.pipeline")
STATE = "state.json"


def source_fingerprint(spec: str) -> str:
    """A cheap identity of a data source: the spec, plus sizes and mtimes of the files it names."""
    h = hashlib.sha256(spec.encode())
    path = Path(spec.split("?", 1)[0])
    if not spec.startswith("synthetic:") and path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(path) if path.is_dir() else f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def step_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Settings added after the first pipelines ran count in a step's key only when set, so that unchanged
# pipelines keep their keys (and their finished steps).
LATER_DEFAULTS = {"strategy": "auto", "scale_batch": False}


def _key_settings(section: dict) -> dict:
    return {k: v for k, v in section.items() if k not in LATER_DEFAULTS or v != LATER_DEFAULTS[k]}


def _multiworker(p: Pipeline) -> bool:
    return any(p.section(s).get("strategy") == "multiworker" for s in ("pretrain", "train"))


def _train_config(p: Pipeline, out: Path, *, section: str, weights: str | None, resume: bool | None = None):
    """The TrainConfig or FinetuneConfig a step's settings describe (the CLI builds the same objects)."""
    from toolkit.pipeline.spec import train_config

    return train_config(p.settings, section, out=str(out), weights=weights,
                        resume=(out / "config.json").is_file() if resume is None else resume)


class _State:
    """``state.json`` in the pipeline's work folder: the key and output of every finished step."""

    def __init__(self, folder: Path):
        self.path = folder / STATE
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def done(self, step: str, key: str, output: Path) -> bool:
        entry = self.data.get(step)
        return bool(entry and entry.get("key") == key and Path(entry["output"]).exists())

    def record(self, step: str, key: str, output: Path, seconds: float) -> None:
        from toolkit.train.runs import write_json_atomic

        self.data[step] = {"key": key, "output": str(output), "seconds": round(seconds, 2),
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json_atomic(self.path, self.data)


def _train_step(p: Pipeline, work: Path, state: _State, section: str, upstream: str, weights: str | None,
                dist=None):
    """One training step; under multiworker every worker runs it and the chief's files decide (skip, resume)."""
    from toolkit.train import distribute as D

    dist = dist or D.LOCAL
    t = p.section(section)
    data = t.get("data") or p.section("data")["spec"]
    key = step_key(section, _key_settings(t), p.section("data"), source_fingerprint(data), upstream, weights)
    out = work / f"{section}-{key}"
    if dist.chief_says(state.done(section, key, out / "model.keras")):
        log.info("%s: unchanged since the last run, skipped (%s)", section, out)
        return key, out
    t0 = time.perf_counter()
    config = _train_config(p, out, section=section, weights=weights,
                           resume=dist.chief_says((out / "config.json").is_file()))
    if config.resume:
        log.info("%s: resuming the unfinished run in %s", section, out)
    if section == "pretrain" or t["mode"] == "scratch":
        from toolkit.train.fit import train

        train(config)
    else:
        from toolkit.train.finetune import finetune

        finetune(config)
    if dist.is_chief:
        state.record(section, key, out / "model.keras", time.perf_counter() - t0)
    return key, out


def run_pipeline(p: Pipeline, *, work_root: str | Path = "runs/pipelines") -> dict:
    """Run every step of ``p``; returns {step: output path}. Re-running skips unchanged steps.

    Each step loads the data again; its warnings (unreadable files, duplicates) are printed once per run.

    Raises:
        ToolkitError: from any step (bad data, failed validation...); finished steps stay finished.
    """
    from toolkit.data.report import each_warning_once

    with each_warning_once():
        return _run_steps(p, work_root)


def _run_steps(p: Pipeline, work_root: str | Path) -> dict:
    check_ready(p)
    work = Path(work_root) / p.name
    dist = None
    if _multiworker(p):  # the cluster (from TF_CONFIG) comes up before anything else touches TensorFlow
        from toolkit.train import distribute as D

        D.quiet_native_log("multiworker")
        dist = D.setup("multiworker")
    if dist is None or dist.is_chief:  # the work folder and its state are the chief's
        work.mkdir(parents=True, exist_ok=True)
    state = _State(work)
    if p.section("train")["mode"] == "face":
        return _face_steps(p, state)
    outputs: dict[str, Path] = {}
    upstream, weights = "", p.section("train").get("weights")
    if p.has_pretrain:
        upstream, outputs["pretrain"] = _train_step(p, work, state, "pretrain", "", None, dist)
        if weights == "pretrain":
            weights = str(outputs["pretrain"])
    train_key, outputs["train"] = _train_step(p, work, state, "train", upstream, weights, dist)
    if dist is not None and not dist.is_chief:
        log.info("worker %d: training done; the chief exports, benchmarks and reports", dist.index)
        return outputs

    e = p.section("export")
    export_out = Path(e["out"])
    export_key = step_key("export", e, train_key)
    if state.done("export", export_key, export_out / "manifest.json"):
        log.info("export: unchanged since the last run, skipped (%s)", export_out)
    else:
        from toolkit.export.api import export
        from toolkit.export.config import ExportConfig

        t0 = time.perf_counter()
        fields = {f: e[k] for k, (_, f) in SECTIONS["export"].items()}
        export(ExportConfig(source=str(outputs["train"]), **{**fields, "out": str(export_out)}, overwrite=True,
                            seed=p.section("data")["seed"]),
               log=lambda msg: log.info("export: %s", msg))
        state.record("export", export_key, export_out / "manifest.json", time.perf_counter() - t0)
    outputs["export"] = export_out

    b = p.section("benchmark")
    if b["enabled"]:
        bench_key = step_key("benchmark", b, export_key)
        if state.done("benchmark", bench_key, export_out / "benchmark.json"):
            log.info("benchmark: unchanged since the last run, skipped")
        else:
            from toolkit.bench.inference import BenchmarkConfig, benchmark

            t0 = time.perf_counter()
            fields = {f: b[k] for k, (cls, f) in SECTIONS["benchmark"].items() if cls is BenchmarkConfig}
            benchmark(BenchmarkConfig(folder=str(export_out), **fields, run=str(outputs["train"])),
                      log=lambda msg: log.info("benchmark: %s", msg))
            state.record("benchmark", bench_key, export_out / "benchmark.json", time.perf_counter() - t0)
    if p.section("report")["enabled"]:
        from toolkit.pipeline.report import write_report

        outputs["report"] = write_report(p, outputs)
    return outputs


def _face_steps(p: Pipeline, state: _State) -> dict:
    """train.mode = "face": ``toolkit face-model`` as one step (features, head, threshold, validated export; its
    report.md is written with it). ``toolkit benchmark`` times single-file image models, not this chain: the
    chain's latency is ``toolkit door bench``'s."""
    from toolkit.pipeline.spec import face_config

    out = Path(p.section("export")["out"])
    data = p.section("data")
    key = step_key("face", p.section("face"), data, source_fingerprint(data["spec"]), str(out))
    outputs = {"export": out, "report": out / "report.md"}
    if state.done("face", key, out / "manifest.json"):
        log.info("face model: unchanged since the last run, skipped (%s)", out)
        return outputs
    from toolkit.export.facemesh import build_face_model

    t0 = time.perf_counter()
    build_face_model(face_config(p.settings, out=str(out)), log=lambda msg: log.info("face model: %s", msg))
    state.record("face", key, out / "manifest.json", time.perf_counter() - t0)
    if p.section("benchmark")["enabled"]:
        log.info("benchmark: skipped for a face-landmark export; time it with 'toolkit door bench --model %s'", out)
    return outputs


def check_ready(p: Pipeline) -> None:
    """Cheap checks that need the file system, before any training starts."""
    spec = p.section("data")["spec"]
    base = Path(spec.split("?", 1)[0])
    if p.section("train")["mode"] == "face" and spec.startswith("synthetic:"):
        raise ToolkitError(f"{p.path}: data.spec: {spec} has no real faces for the face mesh; give photos of real "
                           "faces, an image folder with no_smile/ and smile/ (e.g. from 'toolkit door collect'): "
                           "--data PHOTOS")
    if not spec.startswith("synthetic:") and not base.exists():
        hint = (": take photos with 'toolkit door collect --out PHOTOS --label smile' (and no_smile), then give "
                "--data PHOTOS") if p.section("train")["mode"] == "face" else ""
        raise ToolkitError(f"{p.path}: data.spec: {base} not found{hint}")
    w = p.section("train").get("weights")
    if w and w not in ("imagenet", "pretrain", "none", "random") and not Path(w).exists():
        raise ToolkitError(f"{p.path}: train.weights: {w} not found")
