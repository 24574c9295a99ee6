"""``toolkit finetune`` and ``toolkit cache ls|clear``."""

from __future__ import annotations

import dataclasses

import typer

from toolkit.cli import app
from toolkit.cli.options import config_command
from toolkit.cli.train import _print_result
from toolkit.config import FinetuneConfig, ModelOptions

cache_app = typer.Typer(help="Show or free the penultimate-feature cache ($TOOLKIT_CACHE or ~/.cache/toolkit).",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@config_command(app, FinetuneConfig, ModelOptions)
def finetune(config: FinetuneConfig, build: ModelOptions) -> None:
    """Fine-tune pretrained weights on new data with a new head: frozen layers, two stages, or cached features."""
    from toolkit.train.finetune import finetune as finetune_fn

    run = finetune_fn(dataclasses.replace(config, model_kwargs=build.as_kwargs()))
    _print_result(run.path if run is not None else None)


@cache_app.command("ls")
def cache_ls() -> None:
    """List cached feature entries: key, split, images, dimension, size, model."""
    from toolkit.train.features import cache_root, list_cache

    rows = list_cache()
    typer.echo(f"feature cache: {cache_root()}")
    for r in rows:
        if r["complete"]:
            typer.echo(f"{r['key'][:12]}  {r.get('split', '?'):<5} n={r.get('n', '?'):<6} dim={r.get('dim', '?'):<6} "
                       f"{r['bytes'] / 1e6:8.1f} MB  {r.get('model', '')}  {r.get('created', '')}")
        else:
            typer.echo(f"{r['key'][:40]}  unfinished (a killed run; never used)  {r['bytes'] / 1e6:8.1f} MB")
    typer.echo(f"{len(rows)} entries, {sum(r['bytes'] for r in rows) / 1e6:.1f} MB")


@cache_app.command("clear")
def cache_clear() -> None:
    """Delete every cached feature entry."""
    from toolkit.train.features import cache_root, clear_cache

    n, size = clear_cache()
    typer.echo(f"removed {n} entries ({size / 1e6:.1f} MB) from {cache_root()}")
