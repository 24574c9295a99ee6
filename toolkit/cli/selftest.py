"""``toolkit selftest``: the long reliability runs and their figures."""

from __future__ import annotations

from pathlib import Path

import typer

from toolkit.cli import app


@app.command()
def selftest(
    only: str = typer.Option("", "--only", help="Comma list of sections: interrupt, diskfull, fuzz, models, audit "
                             "(default: all)."),
    quick: bool = typer.Option(False, "--quick", help="CI-sized budgets (one kill each, a few hundred fuzz cases)."),
    seed: int = typer.Option(0, help="Seed of kill points and fuzz cases; the same seed repeats the same cases."),
    work: Path = typer.Option(None, "--work", help="Keep the runs in this folder (default: a temporary one, removed)."),
) -> None:
    """SIGKILL training/export/pipeline/caching and resume, full disks, fuzzed data, damaged models, pip-audit."""
    from toolkit.errors import ToolkitError
    from toolkit.reliability.selftest import QUICK, SECTIONS, Budget, format_table, run_selftest

    sections = tuple(s.strip() for s in only.split(",") if s.strip()) or SECTIONS
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ToolkitError(f"--only: unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        raise ToolkitError("toolkit selftest needs the dev extra (hypothesis, pip-audit): pip install -e '.[dev]'") \
            from None
    rows = run_selftest(sections, budget=QUICK if quick else Budget(), seed=seed, work=work,
                        log=lambda msg: typer.echo(msg, err=True))
    typer.echo(format_table(rows))
