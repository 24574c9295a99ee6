"""``toolkit export`` and ``toolkit benchmark``."""

from __future__ import annotations

from pathlib import Path

import typer

from toolkit.cli import app


def _ints(text: str, flag: str) -> tuple:
    from toolkit.errors import ToolkitError

    out = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part == "all":
            out.append(0)
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise ToolkitError(
                f"{flag}: {part!r} is not an integer (give a comma list such as 1,8)"
            ) from None
    return tuple(out)


@app.command()
def export(
    source: Path = typer.Argument(
        ..., help="A run folder (from 'toolkit train') or a .keras/.h5 model file."
    ),
    out: Path = typer.Option(..., "--out", help="Export folder to create, e.g. exported/happy."),
    format: str = typer.Option("all", "--format", help="tflite, onnx, or all (comma list allowed)."),
    quantize: str = typer.Option(
        "none", "--quantize", help="Comma list of none, dynamic, float16, int8, qat (or all)."
    ),
    data: str = typer.Option(
        None, "--data", help="Validate and calibrate on this data instead of the run's splits."
    ),
    calibration: int = typer.Option(
        300, "--calibration", help="Training images used to calibrate int8 ranges."
    ),
    calibration_method: str = typer.Option(
        "minmax", "--calibration-method", help="ONNX int8: minmax, entropy, percentile."
    ),
    uint8_io: bool = typer.Option(False, "--uint8-io", help="int8 TFLite with uint8 input/output tensors."),
    qat_epochs: int = typer.Option(2, "--qat-epochs", help="Quantization-aware fine-tuning epochs."),
    qat_lr: float = typer.Option(1e-4, "--qat-lr", help="Learning rate of the QAT fine-tuning."),
    max_drop: float = typer.Option(
        1.0, "--max-drop", help="Accuracy points a file may lose before export fails."
    ),
    target_far: float = typer.Option(
        0.01, "--target-far", help="Binary tasks: false-accept rate the threshold allows."
    ),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (>= 17)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export folder."),
    seed: int = typer.Option(0, help="Seed of the calibration sample."),
) -> None:
    """Quantize and export to TFLite/ONNX; every file is validated against the float model."""
    from toolkit.export import ExportConfig
    from toolkit.export import export as export_fn
    from toolkit.export.config import FORMATS, QUANTIZATIONS, parse_list

    config = ExportConfig(
        source=str(source),
        out=str(out),
        formats=parse_list(format, FORMATS, "--format"),
        quantize=parse_list(quantize, QUANTIZATIONS, "--quantize"),
        data=data,
        calibration=calibration,
        calibration_method=calibration_method,
        uint8_io=uint8_io,
        qat_epochs=qat_epochs,
        qat_lr=qat_lr,
        max_drop=max_drop,
        target_far=target_far,
        opset=opset,
        overwrite=overwrite,
        seed=seed,
    )
    folder = export_fn(config, log=lambda msg: typer.echo(msg, err=True))
    typer.echo((folder / "report.md").read_text())
    typer.echo(f"export folder: {folder}")


@app.command()
def benchmark(
    folder: Path = typer.Argument(..., help="An export folder written by 'toolkit export'."),
    threads: str = typer.Option("1,all", "--threads", help="Comma list of thread counts; all = every core."),
    batch: str = typer.Option(
        "1,32", "--batch", help="Batch sizes: 1 for latency, larger ones for throughput."
    ),
    data: str = typer.Option(
        None, "--data", help="Score every image of this data (default: the source run's test split)."
    ),
    repeats: int = typer.Option(50, "--repeats", help="Batch-1 calls per file and thread count."),
    keras: bool = typer.Option(
        True, "--keras/--no-keras", help="Include the float Keras model as the baseline."
    ),
) -> None:
    """Size, accuracy, agreement, latency and throughput of every file in an export folder."""
    from toolkit.bench import BenchmarkConfig
    from toolkit.bench import benchmark as benchmark_fn
    from toolkit.bench.report import markdown

    config = BenchmarkConfig(
        folder=str(folder),
        threads=_ints(threads, "--threads"),
        batches=_ints(batch, "--batch"),
        data=data,
        repeats=repeats,
        keras=keras,
    )
    result = benchmark_fn(config, log=lambda msg: typer.echo(msg, err=True))
    typer.echo(markdown(result))
    typer.echo(f"wrote {', '.join(str(folder / name) for name in result['written'])}")
