"""``toolkit pipeline run|check``: photos to door in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from toolkit.cli import app

pipeline_app = typer.Typer(help="Run declarative pipelines (pipelines/*.toml).", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")

DATA_HELP = "Run on this data instead of the file's data.spec (an image folder, .h5, or synthetic:NAME)."
QUIET_HELP = "Print warnings, errors and the results only: no progress bars, no info lines."
SET_HELP = "Override a setting: section.key=value (repeatable), e.g. --set train.epochs=5."


@pipeline_app.command("check")
def check(
    file: Path = typer.Argument(..., help="A pipeline file, e.g. pipelines/happy.toml."),
    data: str = typer.Option(None, "--data", help=DATA_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Validate a pipeline file and print the settings it resolves to, without running anything."""
    import json

    from toolkit.pipeline import load_pipeline

    p = load_pipeline(file, data=data, sets=set_)
    typer.echo(json.dumps({"name": p.name, **p.settings}, indent=2))


@pipeline_app.command("run")
def run(
    file: Path = typer.Argument(..., help="A pipeline file, e.g. pipelines/happy.toml."),
    data: str = typer.Option(None, "--data", help=DATA_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path = typer.Option(Path("runs/pipelines"), "--out", help="Where training runs and step state go."),
    work: Path = typer.Option(None, "--work", hidden=True),  # the old spelling of --out
    strict: bool = typer.Option(False, "--strict", help="Unreadable images are an error (the same as --set "
                                "data.strict=true)."),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
) -> None:
    """Run every step; steps whose inputs did not change since the last run are skipped."""
    from toolkit.cli.options import deprecated
    from toolkit.pipeline import load_pipeline
    from toolkit.pipeline.run import run_pipeline
    from toolkit.progress import OutputOptions

    OutputOptions(quiet=quiet).apply()
    out = deprecated("--work", "--out", work, out)
    p = load_pipeline(file, data=data, sets=[*set_, *(["data.strict=true"] if strict else [])])
    outputs = run_pipeline(p, work_root=out)
    if "export" not in outputs:  # a multiworker worker other than the chief
        typer.echo("worker done: the chief holds the training run, the export and the report")
        return
    if "train" in outputs:  # train.mode = "face" builds the export in one step: no training run of its own
        typer.echo(f"training run: {outputs['train']}")
    typer.echo(f"exported:     {outputs['export']}")
    if "report" in outputs:
        also = "  (and report.md)" if Path(outputs["report"]).suffix == ".html" else ""
        typer.echo(f"report:       {outputs['report']}{also}")
    typer.echo(f"serve it:     toolkit door serve --model {outputs['export']}")
