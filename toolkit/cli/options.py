"""Typer commands whose options are derived from config dataclasses (see :mod:`toolkit.settings`).

``@config_command(app, TrainConfig)`` turns every field declared with :func:`toolkit.settings.setting`
into an option (or argument) with its help, default and choices, builds the config from what was
given and calls the decorated function with it. The function's own extra parameters (plain typer
options) are passed through. A bad value is one ``error: --flag: why`` line; an old flag spelling
still works, hidden, with one ``warning:`` line naming the new one.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path

import typer

from toolkit import settings as S
from toolkit.errors import ToolkitError
from toolkit.progress import OutputOptions


def _alias_param(alias: str) -> str:
    return "alias__" + alias.lstrip("-").replace("-", "_")


def _params(cls, skip: tuple) -> list[tuple[inspect.Parameter, type]]:
    """(parameter, annotation) for every CLI field of ``cls`` and its hidden deprecated aliases."""
    out = []
    for f in dataclasses.fields(cls):
        m = S.meta(f)
        if not m["cli"] or f.name in skip:
            continue
        kind, optional = S.kind_of(cls, f.name)
        default = S.default_of(f)
        required = default is dataclasses.MISSING
        annotation = {S.INT: int, S.FLOAT: float, S.BOOL: bool}.get(kind, Path if S.is_path(cls, f.name) else str)
        shown = S.as_text(default) if not required else ...
        help_text = m["help"]
        if kind == S.LIST and m["choices"]:
            help_text += f" Choose from: {', '.join(m['choices'])}" + (f" or {m['every']}." if m["every"] else ".")
        if m["choices"] and kind != S.LIST:
            annotation = typing.Literal[tuple(m["choices"])]  # typer shows and checks the choices
        if m["argument"]:
            info = typer.Argument(shown, help=help_text, show_default=not required and default is not None, )
        else:
            decls = [m["flag"] or "--" + f.name.replace("_", "-")]
            info = typer.Option(shown, *decls, help=help_text, hidden=m["hidden"],
                                show_default=not required and default not in (None, "", ()))
        if optional or default is None:
            annotation = annotation | None
        out.append((inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info), annotation))
        for alias in m["aliases"]:
            hidden = typer.Option(None, alias, hidden=True)
            out.append((inspect.Parameter(_alias_param(alias), inspect.Parameter.KEYWORD_ONLY, default=hidden),
                        annotation | None))
    return out


def build(cls, values: dict):
    """``cls(**values)`` from command-line values (those that are its fields): lists parsed, errors named by flag."""
    kwargs = {}
    names = S.fields_of(cls)
    for name, value in values.items():
        if name not in names:
            continue
        kind, _ = S.kind_of(cls, name)
        if kind == S.LIST and isinstance(value, str):
            try:
                value = S.parse_text(cls, name, value)
            except S.SettingError as exc:
                raise ToolkitError(f"{S.flag_of(cls, name)}: {exc.why}") from None
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except S.SettingError as exc:
        raise ToolkitError(f"{S.flag_of(cls, exc.name)}: {exc.why}") from None


def deprecated(old: str, new: str, value, current):
    """For hand-written commands: ``value`` given under the old flag wins, with one warning line."""
    if value is None:
        return current
    typer.echo(f"warning: {old} is deprecated; use {new}", err=True)
    return value


def _apply_aliases(cls, kwargs: dict) -> None:
    """Move values given under deprecated spellings to their fields, with one warning line each."""
    for f in dataclasses.fields(cls):
        for alias in S.meta(f)["aliases"]:
            value = kwargs.pop(_alias_param(alias), None)
            if value is not None:
                typer.echo(f"warning: {alias} is deprecated; use {S.flag_of(cls, f.name)}", err=True)
                kwargs[f.name] = value


def config_command(app: typer.Typer, *classes, name: str | None = None, skip: tuple = ()):
    """Register the decorated ``fn(config, ..., **extras)`` as a command whose options come from ``classes``.

    Every such command also takes :class:`toolkit.progress.OutputOptions` (``--quiet``), applied before ``fn`` runs.

    Args:
        app: the typer app to add the command to.
        classes: config dataclasses; each is built from its own options and passed positionally, in order.
        name: the command's name (default: the function's name with dashes).
        skip: field names no option is made for (they keep their defaults).
    """

    def decorate(fn: Callable) -> Callable:
        own = list(inspect.signature(fn).parameters.values())[len(classes):]
        hints = typing.get_type_hints(fn)
        params, annotations = [], {}
        seen = {p.name for p in own if p.name in S.fields_of(OutputOptions)}  # a command's own --quiet wins
        for cls in (*classes, OutputOptions):
            for param, annotation in _params(cls, skip):
                if param.name in seen:  # a field two classes share (e.g. seed) is one option
                    continue
                seen.add(param.name)
                params.append(param)
                annotations[param.name] = annotation
        for p in own:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            annotations[p.name] = hints.get(p.name, str)
        # typer lists arguments in signature order; keep them first so `--help` reads naturally
        params.sort(key=lambda p: not isinstance(p.default, typer.models.ArgumentInfo))

        def callback(**kwargs):
            for cls in classes:
                _apply_aliases(cls, kwargs)
            configs = [build(cls, kwargs) for cls in classes]  # each takes the options that are its fields
            build(OutputOptions, kwargs).apply()
            return fn(*configs, **{p.name: kwargs[p.name] for p in own})

        callback.__signature__ = inspect.Signature(params)
        callback.__annotations__ = annotations
        callback.__doc__ = fn.__doc__
        callback.__name__ = fn.__name__
        app.command(name or fn.__name__.replace("_", "-"))(callback)
        return fn

    return decorate
