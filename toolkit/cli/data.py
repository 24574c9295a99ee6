"""``toolkit data ...``: inspect data sources and write the synthetic sets as image folders."""

import typer

from toolkit.cli import app

data_app = typer.Typer(help="Inspect data sources and write built-in synthetic sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
