"""The ``toolkit`` command.

Each subcommand parses its flags into a config and calls one library function. Modules here import
only typer at import time (``toolkit --help`` must answer in well under a second); TensorFlow and
friends are imported inside the command bodies.
"""

from __future__ import annotations

import importlib
import sys

import typer

from toolkit import __version__
from toolkit.errors import ToolkitError
from toolkit.progress import log_to_stderr

app = typer.Typer(
    name="toolkit",
    help="Train, quantize, export and serve small image classifiers, from photos to a door camera.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # sub-commands inherit it
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"toolkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Train, quantize, export and serve small image classifiers, from photos to a door camera."""


# Each module adds its commands to ``app`` when imported; each imports only typer at module level.
COMMAND_MODULES = ("data", "models", "train", "finetune", "export", "face", "door", "pipeline")
for _name in COMMAND_MODULES:
    importlib.import_module(f"toolkit.cli.{_name}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user mistakes become one ``error:`` line and exit status 2."""
    log_to_stderr()
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="toolkit", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 130
    except typer.TyperException as exc:  # click's usage errors (typer vendors click)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `toolkit`, `toolkit door`: help is the answer, not an error
            typer.echo(exc.ctx.get_help())
            return 0
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"error: {exc.format_message()}{where}", err=True)
        return getattr(exc, "exit_code", 2) or 2
    except ToolkitError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:  # several problems: one line each
            typer.echo(f"error: {line}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        return 130
    except Exception as exc:  # a full disk is the user's to fix, wherever the write failed
        from toolkit.errors import disk_full_error

        full = disk_full_error(exc)
        if full is None:
            raise
        typer.echo(f"error: {full}", err=True)
        return 2
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
