"""``toolkit train``, ``toolkit evaluate`` and ``toolkit predict``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from toolkit.cli import app
from toolkit.cli.options import config_command
from toolkit.config import ModelOptions, TrainConfig


@config_command(app, TrainConfig, ModelOptions, skip=("preprocess",))
def train(config: TrainConfig, build: ModelOptions) -> None:
    """Train a model from scratch and write a run folder (model, config, history, metrics, plots)."""
    from toolkit.train.fit import train as train_fn

    run = train_fn(dataclasses.replace(config, model_kwargs=build.as_kwargs()))
    _print_result(run.path if run is not None else None)


def _print_result(path: Path | None) -> None:
    if path is None:  # a multiworker run's other workers: the chief wrote the folder
        typer.echo("worker done: the chief holds the run folder")
        return
    metrics_file = path / "metrics.json"
    if metrics_file.is_file():
        m = json.loads(metrics_file.read_text())
        if "cv" in m:  # the cross-validated head's estimate, beside the test figure it predicts
            cv = m["cv"]
            typer.echo(f"cross-validated accuracy {cv['accuracy_mean']:.4f} ± {cv['accuracy_std']:.4f} "
                       f"({cv['folds']} folds of {cv['n']} images; layer {cv['layer']}, C {cv['C']:g})")
        typer.echo(f"test accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  on {m['n']} images")
        if "no_hand" in m:  # the hands base: images without a hand are wrong answers in that figure, and named
            files = m.get("no_hand_files", [])
            typer.echo(f"no hand found in {m['no_hand']} test images (counted wrong)"
                       + (f": {', '.join(files[:10])}{' ...' if len(files) > 10 else ''}" if files else ""))
    typer.echo(f"run folder: {path}  (model.keras, config.json, history.csv, metrics.json, curves.png, "
               "confusion.png; TensorBoard: tensorboard --logdir " + str(path / "logs") + ")")


@app.command()
def evaluate(
    source: str = typer.Argument(..., help="A run folder, a .keras/.h5 model file, or an export folder (TF-free)."),
    data: str = typer.Option(None, "--data", help="Evaluate on this data instead of the run's test split "
                             "(required for a model file or an export folder)."),
    tta: bool = typer.Option(False, "--tta", help="Average over 10 views: 5 crops and their mirror images."),
    out: Path = typer.Option(None, "--out", help="Write metrics.json here (default: the run folder)."),
    file: str = typer.Option(None, "--file", help="Export folder: ONNX file in it (default: the manifest's "
                             "'serve' file)."),
    strict: bool = typer.Option(False, "--strict", help="Unreadable images in --data are an error instead of a "
                                "skipped warning."),
    state: str = typer.Option(None, "--state", help="Export folder: score the head version chosen in this door "
                              "state folder ('toolkit door adapt')."),
) -> None:
    """Accuracy, loss, per-class precision/recall/F1, confusion matrix; FAR/FRR table for 2 classes."""
    from toolkit.inference.manifest import is_export_folder  # decided before anything imports TensorFlow

    if is_export_folder(source, file):
        from toolkit.bench.accuracy import evaluate_export

        report = evaluate_export(source, data=data, file=file, out=str(out) if out else None, tta=tta,
                                 strict=strict, state=state)
    else:
        from toolkit.train.evaluate import evaluate as evaluate_fn

        report = evaluate_fn(source, data=data, tta=tta, out=str(out) if out else None, strict=strict)
    typer.echo(format_report(report))


def format_report(report: dict) -> str:
    lines = [f"accuracy {report['accuracy']:.4f}  loss {report['loss']:.4f}  n={report['n']}"
             + ("  (TTA: 10 views)" if report.get("tta") else "")]
    lines.append(f"{'class':<12} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}")
    for name, s in report["per_class"].items():
        lines.append(f"{name:<12} {s['precision']:>9.3f} {s['recall']:>7.3f} {s['f1']:>6.3f} {s['support']:>8}")
    lines.append("confusion (rows true, columns predicted): " + json.dumps(report["confusion"]))
    if "thresholds" in report:
        lines.append(f"{'threshold':>9} {'FAR':>7} {'FRR':>7}   (door opens when P >= threshold)")
        lines += [f"{r['threshold']:>9.2f} {r['far']:>7.3f} {r['frr']:>7.3f}"
                  + (f"   <- {report['file']}'s manifest threshold ({r['threshold']:.4f})"
                     if r["threshold"] == report.get("threshold") else "")
                  for r in report["thresholds"]]
    return "\n".join(lines)


@app.command()
def predict(
    source: str = typer.Argument(..., help="A run folder, a .keras/.h5 model file, or an export folder (TF-free)."),
    images: list[Path] = typer.Argument(..., help="Image files, any size or mode."),
    file: str = typer.Option(None, "--file", help="Export folder: ONNX file in it (default: the manifest's "
                             "'serve' file)."),
) -> None:
    """Print the label and probability of each image."""
    from toolkit.inference.manifest import is_export_folder  # decided before anything imports TensorFlow

    if is_export_folder(source, file):
        from toolkit.inference.predictor import predict_files

        rows = predict_files(source, [str(p) for p in images], file=file)
    else:
        from toolkit.train.evaluate import predict as predict_fn

        rows = predict_fn(source, [str(p) for p in images])
    for row in rows:
        typer.echo(f"{row['image']}\t{row['label']}\t{row['probability']:.4f}")
