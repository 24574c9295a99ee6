"""int8 against float for the toolkit's bases: plain, automatic mixed precision and QAT, ONNX and TFLite, one table.

For each trained run under ``--runs`` (``resnet50-signs``: ResNet50 from scratch on sign_digits 0-5,
``happy-smiles``: HappyModel on smiles, ``face-smiles``: the face base with a cross-validated head) the
export library writes, exactly as ``toolkit export`` would:

- ``float`` and plain ``int8`` (``--quantize none,int8 --mixed-precision off --max-drop 100``: the gate
  must not hide a bad file from the table);
- ``mixed``: ``--quantize none,int8`` with the defaults (``--mixed-precision auto``, the default
  ``--max-drop``, or this command's ``--max-drop``): an int8 file that misses the gate keeps its most
  sensitive layers in float;
- ``qat``: ``--quantize qat --max-drop 100``; a model tfmot cannot rebuild says why.

Every file then runs here on the split the export validated on (the source run's test split): accuracy,
agreement and max |Δp| against the float Keras model, the accuracy drop with Newcombe's paired 95 % interval,
size, and p50 latency at batch 1 on one thread (the files of one format timed in turns, so a ratio compares one
moment of the machine) with its ratio to the same format's float file.

``--quick`` trains a tiny HappyModel on synthetic faces in a temporary folder instead (a self-check of
the whole path in well under a minute; its numbers mean nothing).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import cli

RUNS = (  # (run folder name, what it is)
    ("resnet50-signs", "ResNet50 from scratch, sign_digits 0-5"),
    ("happy-smiles", "HappyModel from scratch, smiles"),
    ("face-smiles", "face base (fer mini-Xception) + cross-validated head, smiles"),
)
VARIANTS = ("float", "int8", "mixed", "qat")
FORMATS = ("onnx", "tflite")


def has_mixed_precision() -> bool:
    """Is the export's automatic mixed precision merged (``ExportConfig.mixed_precision``)?"""
    from toolkit.export.config import ExportConfig

    return "mixed_precision" in {f.name for f in dataclasses.fields(ExportConfig)}


def paired_interval(float_pred, quant_pred, y) -> dict | None:
    """The export's own paired drop and interval (None before that code is merged)."""
    try:
        from toolkit.export.mixed import paired_drop
    except ImportError:
        return None
    return paired_drop(float_pred, quant_pred, y)


def _config(run: Path, out: Path, quick: bool, **kw):
    from toolkit.export.config import ExportConfig

    extra = {"calibration": 32} if quick else {}
    if not has_mixed_precision():
        kw.pop("mixed_precision", None)
    return ExportConfig(source=str(run), out=str(out), formats=FORMATS, overwrite=True, **extra, **kw)


def export_variants(run: Path, out: Path, quick: bool, log, max_drop: float | None = None, reuse: bool = False) -> dict:
    """{variant: export folder, or the one-line reason it has none}. With ``reuse``, a folder already holding a
    manifest (from an earlier run with the same ``--out``) is measured as it is, not exported again."""
    from toolkit.errors import ToolkitError
    from toolkit.export import export as export_now

    def export(config, log):
        folder = Path(config.out)
        if reuse and (folder / "manifest.json").is_file():
            log(f"{run.name}: reusing {folder}")
            return folder
        return export_now(config, log=log)

    folders: dict = {}
    quiet = (lambda msg: None) if quick else log
    log(f"{run.name}: float + plain int8")
    folders["int8"] = export(_config(run, out / "plain", quick, quantize=("none", "int8"), max_drop=100.0,
                                     mixed_precision="off"), log=quiet)
    folders["float"] = folders["int8"]
    if has_mixed_precision():
        log(f"{run.name}: int8 with automatic mixed precision (default --max-drop)")
        try:
            gate = {} if max_drop is None else {"max_drop": max_drop}
            folders["mixed"] = export(_config(run, out / "mixed", quick, quantize=("none", "int8"),
                                              mixed_precision="auto", **gate), log=quiet)
        except ToolkitError as exc:
            folders["mixed"] = f"failed: {exc}"
    else:
        folders["mixed"] = "n/a (not merged)"
    log(f"{run.name}: QAT")
    try:
        folders["qat"] = export(_config(run, out / "qat", quick, quantize=("qat",), max_drop=100.0,
                                        **({"qat_epochs": 1} if quick else {})), log=quiet)
    except ToolkitError as exc:
        # tfmot names the class as "<class 'tf_keras.src....BatchNormalization'>": the class name is enough
        reason = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", str(exc)).replace("--quantize qat: ", "")
        folders["qat"] = f"unsupported: {reason}"
    return folders


def measure(run: Path, folders: dict, repeats: int, min_seconds: float) -> tuple[list[dict], dict]:
    """The table rows of one run, and where their figures come from."""
    from toolkit._keras import predict_array
    from toolkit.export.validate import classes, load_runner, predict
    from toolkit.inference.manifest import load_manifest
    from toolkit.timing import time_in_turns
    from toolkit.train.runs import load_run

    loaded = load_run(run)
    manifest = load_manifest(folders["float"])
    splits = loaded.splits()
    split = splits.val if manifest.data.get("validation_split") == "val" else splits.test
    x, y = split.numpy()
    x, y = x.astype(np.float32), np.asarray(y).reshape(-1)
    reference = predict_array(loaded.load_model(), x, 32).reshape(len(x), -1)
    source = {"run": str(run), "spec": manifest.data.get("spec"), "split": split.name, "n": int(len(y)),
              "fingerprint": split.fingerprint, "calibration": manifest.data.get("calibration")}
    rows = []
    for fmt in FORMATS:
        float_pred, timed = None, []
        for variant in VARIANTS:
            row = {"model": run.name, "format": fmt, "variant": variant}
            rows.append(row)
            folder = folders.get(variant)
            if not isinstance(folder, Path):
                row["note"] = folder
                continue
            m = load_manifest(folder)
            quant = {"float": "none", "int8": "int8", "mixed": "int8", "qat": "qat"}[variant]
            name = next((n for n, e in m.files.items() if e.format == fmt and e.quantization == quant), None)
            if name is None:
                row["note"] = "no such file"
                continue
            path = folder / name
            runner = load_runner(path, threads=1)
            probs = predict(runner, x)
            pred = classes(probs)
            row.update(accuracy=100 * float(np.mean(pred == y)), agreement=100 * float(np.mean(pred == classes(
                reference))), max_dp=float(np.abs(probs - reference).max()), kb=path.stat().st_size / 1024)
            timed.append((row, runner))
            if variant == "float":
                float_pred = pred
            else:
                drop = paired_interval(float_pred, pred, y)
                row["drop"] = 100 * (float(np.mean(float_pred == y)) - float(np.mean(pred == y)))
                row["drop_95"] = drop["drop_95"] if drop else None
            record = m.files[name].mixed_precision if hasattr(m.files[name], "mixed_precision") else None
            if variant == "mixed" and record:
                kept = record.get("float_layers") or []
                row["float_layers"] = f"{len(kept)} of {record.get('candidates', '?')}"
                row["float_layer_names"] = kept
                source.setdefault("mixed_selection", {})[fmt] = {
                    "split": record.get("selection_split"), "n": record.get("selection_n"),
                    "sensitivity_images": record.get("sensitivity_images")}
            elif variant == "mixed":
                row["float_layers"] = "0 (int8 passed the gate)"
            elif variant in ("int8", "qat"):
                row["float_layers"] = "0"
        p50 = [t["p50_ms"] for t in time_in_turns([runner for _, runner in timed], x, repeats, min_seconds)]
        for (row, _), ms in zip(timed, p50):
            row["p50_ms"] = ms
            if row["variant"] != "float" and timed[0][0]["variant"] == "float":
                row["ratio"] = ms / p50[0]
    return rows, source


def _cell(row: dict, key: str, spec: str) -> str:
    value = row.get(key)
    return "" if value is None else format(value, spec)


def format_table(rows: list[dict], sources: list[dict]) -> str:
    """The one table (Markdown), then where each model's figures come from."""
    head = ("| model | format | variant | accuracy % | agreement % | max abs dp | KB | p50 ms (1 thread) | "
            "int8/fp32 | drop (95% interval) | layers kept float |")
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if "note" in r:
            lines.append(f"| {r['model']} | {r['format']} | {r['variant']} | {r['note'][:240]} |||||||")
            continue
        lo_hi = r.get("drop_95")
        drop = "" if "drop" not in r else f"{r['drop']:+.1f}" + (f" ({lo_hi[0]:+.1f} to {lo_hi[1]:+.1f})"
                                                                    if lo_hi else "")
        lines.append(
            f"| {r['model']} | {r['format']} | {r['variant']} | {_cell(r, 'accuracy', '.1f')} | "
            f"{_cell(r, 'agreement', '.1f')} | {_cell(r, 'max_dp', '.3f')} | {_cell(r, 'kb', ',.0f')} | "
            f"{_cell(r, 'p50_ms', '.2f')} | {_cell(r, 'ratio', '.2f')} | {drop} | {r.get('float_layers', '')} |")
    lines.append("")
    for s in sources:
        cal = s.get("calibration") or {}
        lines.append(f"- {Path(s['run']).name}: every figure on `{s['spec']}`, the run's {s['split']} split "
                     f"({s['n']} images, fingerprint {str(s['fingerprint'])[:12]}); int8 calibrated on {cal.get('n')} "
                     f"{cal.get('split')} images ({str(cal.get('fingerprint'))[:12]})"
                     + "".join(f"; {fmt} mixed-precision layers chosen on the {sel['split']} split ({sel['n']} "
                               f"images, {sel['sensitivity_images']} for the ranking)"
                               for fmt, sel in s.get("mixed_selection", {}).items()))
    for r in rows:
        if r.get("float_layer_names"):
            lines.append(f"- {r['model']} {r['format']} layers kept float: {', '.join(r['float_layer_names'])}")
    return "\n".join(lines)


def quick_runs(root: Path) -> list[Path]:
    """A tiny HappyModel run on synthetic faces (a few seconds), for --quick."""
    from toolkit.config import TrainConfig
    from toolkit.train.fit import train

    run = train(TrainConfig(model="happy", data="synthetic:happy?n=96&seed=3", out=str(root / "happy-synthetic"),
                            epochs=1, batch_size=16, image_size=32, patience=0))
    return [run.path]


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("int8", __doc__)
    p.add_argument("--runs", type=Path, default=Path("runs/int8"),
                   help="Folder holding the trained runs " + ", ".join(n for n, _ in RUNS) + ".")
    p.add_argument("--out", type=Path, default=None, help="Folder for the exports and int8.json (default: a "
                   "temporary folder, removed).")
    p.add_argument("--quick", action="store_true", help="A tiny synthetic run instead of --runs (self-check).")
    p.add_argument("--max-drop", type=float, default=None, help="The mixed rows' gate in accuracy points "
                   "(default: the export's; 0 makes every int8 file that loses an image search for float layers).")
    p.add_argument("--repeats", type=cli.positive(int), default=100, help="Latency calls per file (at least).")
    p.add_argument("--reuse", action="store_true", help="Measure the exports an earlier run left in --out "
                   "instead of exporting again (accuracy and latency only; the exports must be of these runs).")
    ns = p.parse_args(argv)
    if not ns.quick and not ns.runs.is_dir():
        p.error(f"--runs {ns.runs}: not a folder")
    if ns.reuse and ns.out is None:
        p.error("--reuse needs --out: the folder an earlier run exported into")
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp:
        out = ns.out or Path(tmp)
        if ns.quick:
            runs = quick_runs(out / "runs")
        else:
            runs = [ns.runs / name for name, _ in RUNS if (ns.runs / name / "config.json").is_file()]
            if not runs:
                p.error(f"--runs {ns.runs}: none of {', '.join(n for n, _ in RUNS)} is there")
        repeats, min_seconds = (5, 0.0) if ns.quick else (ns.repeats, 2.0)
        rows, sources = [], []
        for run in runs:
            folders = export_variants(run, out / run.name, ns.quick, log=lambda m: print(m, file=sys.stderr),
                                      max_drop=ns.max_drop, reuse=ns.reuse)
            r, s = measure(run, folders, repeats, min_seconds)
            rows += r
            sources.append(s)
        table = format_table(rows, sources)
        if ns.out:
            ns.out.mkdir(parents=True, exist_ok=True)
            (ns.out / "int8.json").write_text(json.dumps({"rows": rows, "sources": sources}, indent=1, default=str))
    print(table)
    return 0


if __name__ == "__main__":
    cli.run(main)
