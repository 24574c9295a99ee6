"""What every ``python -m benchmarks.NAME`` shares: argparse with one-line errors, and ToolkitError as ``error:``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``error:`` line (exit 2), like the ``toolkit`` command's."""

    def parse_args(self, args=None, namespace=None):  # noqa: D102 - argparse's, plus --quiet applied
        from toolkit.progress import OutputOptions

        ns = super().parse_args(args, namespace)
        OutputOptions(quiet=ns.quiet).apply()
        return ns

    def error(self, message: str) -> None:  # argparse prints the whole usage block first; one line is enough
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def parser(module: str, doc: str | None) -> Parser:
    """A parser named ``python -m benchmarks.MODULE`` whose description is the module docstring's first line."""
    from toolkit import settings
    from toolkit.progress import OutputOptions

    first = (doc or "").strip().splitlines()[0] if doc else None
    p = Parser(prog=f"python -m benchmarks.{module}", description=first)
    quiet = settings.meta(settings.fields_of(OutputOptions)["quiet"])["help"]  # the toolkit's own --quiet
    p.add_argument("--quiet", action="store_true", help=quiet)
    return p


def csv_ints(text: str) -> tuple[int, ...]:
    """``8,32,64`` -> (8, 32, 64): an argparse type; only positive counts."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a count or a comma-separated list like 8,32,64") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive counts, e.g. 8,32,64")
    return values


def positive(kind: type = float) -> Callable[[str], float]:
    """An argparse type: a number > 0 of ``kind``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid ... value" message
    return parse


def run(main: Callable[[list[str] | None], int]) -> None:
    """Run ``main`` as a script: a :class:`~toolkit.errors.ToolkitError` is one ``error:`` line and exit 2; the
    toolkit's info lines and progress go to stderr (not when ``main`` is called in-process, e.g. by a test)."""
    from toolkit.errors import ToolkitError
    from toolkit.progress import log_to_stderr

    log_to_stderr()
    try:
        sys.exit(main(None))
    except ToolkitError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            sys.stderr.write(f"error: {line}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
