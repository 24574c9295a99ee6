"""``toolkit export`` and ``toolkit benchmark``."""

from __future__ import annotations

from pathlib import Path

import typer

from toolkit.bench.config import BenchmarkConfig
from toolkit.cli import app
from toolkit.cli.options import config_command
from toolkit.export.config import ExportConfig


@config_command(app, ExportConfig)
def export(config: ExportConfig) -> None:
    """Quantize and export to TFLite/ONNX; every file is validated against the float model."""
    from toolkit.export import export as export_fn

    folder = export_fn(config, log=lambda msg: typer.echo(msg, err=True))
    typer.echo((folder / "report.md").read_text())
    typer.echo(f"export folder: {folder}")


@config_command(app, BenchmarkConfig)
def benchmark(config: BenchmarkConfig) -> None:
    """Size, accuracy, agreement, latency and throughput of every file in an export folder."""
    from toolkit.bench import benchmark as benchmark_fn
    from toolkit.bench.report import markdown

    result = benchmark_fn(config, log=lambda msg: typer.echo(msg, err=True))
    typer.echo(markdown(result))
    typer.echo(f"wrote {', '.join(str(Path(config.folder) / name) for name in result['written'])}")
