"""``toolkit train``, ``toolkit evaluate`` and ``toolkit predict``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from toolkit.cli import app


def split_list(value: str | None) -> tuple:
    """'flip,pca' -> ('flip', 'pca'); empty or None -> ()."""
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


# The distribution options, shared by train and finetune.
STRATEGY_HELP = ("one: one device; mirrored: every local GPU; multiworker: several machines (--workers or "
                 "TF_CONFIG); auto: mirrored with more than one GPU, multiworker with --workers, else one.")
WORKERS_HELP = "multiworker: host:port of every worker, the chief first; the same list on every worker."
INDEX_HELP = "multiworker: this worker's place in --workers (0 is the chief, which writes the run folder)."
SCALE_HELP = ("--batch-size is per replica and the learning rate is multiplied by the replica count (linear "
              "scaling); default: --batch-size is the global batch and --lr is used as given.")
TIMEOUT_HELP = "multiworker: seconds to wait for every worker to come up before failing."


def distribution_options(strategy, workers, worker_index, scale_batch, connect_timeout) -> dict:
    return dict(strategy=strategy, workers=split_list(workers), worker_index=worker_index, scale_batch=scale_batch,
                connect_timeout=connect_timeout)


@app.command()
def train(
    model: str = typer.Argument(..., help="Registered model name: happy, resnet50 (see 'toolkit models')."),
    data: str = typer.Option(..., "--data", help="Image folder, course .h5 file/folder, or synthetic:happy|signs."),
    out: Path = typer.Option(..., "--out", help="Run folder to create (e.g. runs/happy)."),
    epochs: int = typer.Option(20, help="Maximum number of epochs."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per training step."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate."),
    optimizer: str = typer.Option("adam", help="adam, sgd (momentum 0.9) or rmsprop."),
    seed: int = typer.Option(0, help="Seed for the split, initial weights, shuffling and augmentation."),
    image_size: int = typer.Option(None, "--image-size", help="Input size in pixels (default: the model's, 64)."),
    val: float = typer.Option(0.15, help="Fraction held out for validation (early stopping, best checkpoint)."),
    test: float = typer.Option(0.15, help="Fraction held out for the final test."),
    augment: str = typer.Option("", help="Comma list of: flip, rotate, zoom, shear, color, pca."),
    patience: int = typer.Option(5, help="Early-stopping patience in epochs (0: off)."),
    stem: str = typer.Option(None, help="ResNet only: 'seed' (default) or 'keras' (Keras Applications' stem)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    strict: bool = typer.Option(False, "--strict", help="Unreadable images are an error, not a warning."),
    deterministic: bool = typer.Option(True, "--deterministic/--fast", help="Reproducible ops (a little slower)."),
    strategy: str = typer.Option("auto", "--strategy", help=STRATEGY_HELP),
    workers: str = typer.Option(None, "--workers", help=WORKERS_HELP),
    worker_index: int = typer.Option(None, "--worker-index", help=INDEX_HELP),
    scale_batch: bool = typer.Option(False, "--scale-batch", help=SCALE_HELP),
    connect_timeout: float = typer.Option(120.0, "--connect-timeout", help=TIMEOUT_HELP),
) -> None:
    """Train a model from scratch and write a run folder (model, config, history, metrics, plots)."""
    from toolkit.config import TrainConfig
    from toolkit.train.fit import train as train_fn

    config = TrainConfig(
        model=model, data=data, out=str(out), epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
        seed=seed, image_size=image_size, val=val, test=test, augment=split_list(augment), patience=patience,
        resume=resume, strict=strict, deterministic=deterministic, model_kwargs={"stem": stem} if stem else {},
        **distribution_options(strategy, workers, worker_index, scale_batch, connect_timeout),
    )
    run = train_fn(config)
    _print_result(run.path if run is not None else None)


def _print_result(path: Path | None) -> None:
    if path is None:  # a multiworker run's other workers: the chief wrote the folder
        typer.echo("worker done: the chief holds the run folder")
        return
    metrics_file = path / "metrics.json"
    if metrics_file.is_file():
        m = json.loads(metrics_file.read_text())
        typer.echo(f"test accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  on {m['n']} images")
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
) -> None:
    """Accuracy, loss, per-class precision/recall/F1, confusion matrix; FAR/FRR table for 2 classes."""
    from toolkit.runtime.manifest import is_export_folder  # decided before anything imports TensorFlow

    if is_export_folder(source, file):
        from toolkit.bench.accuracy import evaluate_export

        report = evaluate_export(source, data=data, file=file, out=str(out) if out else None, tta=tta)
    else:
        from toolkit.train.evaluate import evaluate as evaluate_fn

        report = evaluate_fn(source, data=data, tta=tta, out=str(out) if out else None)
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
    from toolkit.runtime.manifest import is_export_folder  # decided before anything imports TensorFlow

    if is_export_folder(source, file):
        from toolkit.runtime.predictor import predict_files

        rows = predict_files(source, [str(p) for p in images], file=file)
    else:
        from toolkit.train.evaluate import predict as predict_fn

        rows = predict_fn(source, [str(p) for p in images])
    for row in rows:
        typer.echo(f"{row['image']}\t{row['label']}\t{row['probability']:.4f}")


@app.command("train-benchmark")
def train_benchmark(
    model: str = typer.Argument("resnet50", help="Registered model name."),
    data: str = typer.Option("synthetic:signs", "--data", help="Data spec to train on."),
    epochs: int = typer.Option(3, help="Epochs per side; the fastest after the first (graph tracing) is compared."),
    batch_size: int = typer.Option(32, "--batch-size"),
    image_size: int = typer.Option(None, "--image-size"),
    deterministic: bool = typer.Option(True, "--deterministic/--fast", help="Op determinism (both sides)."),
    rounds: int = typer.Option(1, "--rounds", min=1,
                               help="Repeat both sides, alternating which goes first; epochs are pooled."),
) -> None:
    """Seconds per epoch of 'toolkit train' against plain model.fit on the same numpy arrays, epochs interleaved."""
    from toolkit.train.bench import benchmark_training

    r = benchmark_training(model, data, epochs=epochs, batch_size=batch_size, image_size=image_size,
                           deterministic=deterministic, rounds=rounds)
    typer.echo(f"{r['model']} on {r['data']}: {r['train_images']} training + {r['val_images']} validation images, "
               f"batch {r['batch_size']}, deterministic={r['deterministic']}, {r['rounds']} round(s)")
    typer.echo(f"{'round':>5} {'epoch':>5} {'toolkit train s':>16} {'plain fit s':>12}")
    for n, (ta, tb) in enumerate(zip(r["toolkit_epoch_s"], r["plain_fit_epoch_s"]), start=1):
        for i, (a, b) in enumerate(zip(ta, tb), start=1):
            typer.echo(f"{n:>5} {i:>5} {a:>16.2f} {b:>12.2f}")
    low, high = r["paired_ratio_95"]
    typer.echo(f"ratio toolkit/plain, epochs after each run's first: fastest {r['ratio']:.3f}, "
               f"median {r['median_ratio']:.3f}, paired {r['paired_ratio']:.3f} "
               f"(95 % interval {low:.3f}-{high:.3f})  (<= 1: no slower)")


@app.command("scaling-benchmark")
def scaling_benchmark(
    model: str = typer.Argument("happy", help="Registered model name."),
    data: str = typer.Option("synthetic:happy?n=1000", "--data", help="Data spec (decoded once, shared by all)."),
    workers: int = typer.Option(2, "--workers", help="Worker processes of the multiworker side (on 127.0.0.1)."),
    epochs: int = typer.Option(4, help="Epochs per side; the first traces graphs and is not timed."),
    batch_size: int = typer.Option(64, "--batch-size", help="Global batch, the same on both sides."),
    image_size: int = typer.Option(64, "--image-size"),
) -> None:
    """Training images/s of one process against --workers multiworker processes on this machine."""
    from toolkit.train.scale_bench import benchmark_scaling, format_scaling

    typer.echo(format_scaling(benchmark_scaling(model, data, workers=workers, epochs=epochs, batch_size=batch_size,
                                                image_size=image_size)))
