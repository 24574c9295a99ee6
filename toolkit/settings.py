"""One declaration per setting: dataclass fields that carry their help, flag, choices and bounds.

A config (``TrainConfig``, ``ExportConfig``...) declares each field once with :func:`setting`. The
command line (``toolkit.cli.options``) and the pipeline TOML schema (``toolkit.pipeline.spec``) are
both derived from those fields, and :func:`check` validates a config however it was built, so a
setting's name, default, allowed values and help text live in one place. Standard library only:
the Pi's install must not grow for it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError

INT, FLOAT, STR, BOOL, LIST, DICT = "integer", "number", "string", "boolean", "list", "table"


class SettingError(ToolkitError):
    """A bad value for one setting; callers name it in their own spelling (``--flag`` or ``section.key``)."""

    def __init__(self, name: str, why: str):
        self.name, self.why = name, why
        super().__init__(f"{name}: {why}")


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    choices: tuple | None = None,
    low: float | None = None,
    above: float | None = None,
    high: float | None = None,
    below: float | None = None,
    item: str | None = None,
    every: str | None = None,
    flag: str | None = None,
    argument: bool = False,
    aliases: tuple = (),
    toml_aliases: tuple = (),
    cli: bool = True,
    hidden: bool = False,
) -> Any:
    """A dataclass field with everything the CLI, the TOML schema and :func:`check` need to know.

    Args:
        default: the default value (a list/dict default is copied per instance); omit for a required field.
        help: one sentence for ``--help`` and the docs.
        choices: allowed values (of each item, for a list).
        low, above, high, below: bounds: ``low <= v``, ``above < v``, ``v <= high``, ``v < below``.
        item: a list's item kind (INT or STR; default STR).
        every: a word that stands for "every choice" in a list (``--format all``) or, for a list of
            integers, an item meaning "as many as there are" (``--threads 1,all``).
        flag: the CLI spelling when it is not ``--field-name`` (e.g. ``--deterministic/--fast``).
        argument: a positional CLI argument instead of an option.
        aliases: old CLI spellings still accepted, hidden, with one deprecation line.
        toml_aliases: old TOML key names still accepted, with one deprecation line.
        cli: False for fields no command line sets (derived values).
        hidden: accepted but not listed in ``--help``.
    """
    meta = dict(help=help, choices=choices, low=low, above=above, high=high, below=below, item=item or STR,
                every=every, flag=flag, argument=argument, aliases=tuple(aliases), toml_aliases=tuple(toml_aliases),
                cli=cli, hidden=hidden)
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"setting": meta})
    return dataclasses.field(default=default, metadata={"setting": meta})


def meta(f: dataclasses.Field) -> dict:
    """The :func:`setting` metadata of a field (a plain field gets an empty, CLI-less record)."""
    return f.metadata.get("setting") or dict(help="", choices=None, low=None, above=None, high=None, below=None,
                                             item=STR, every=None, flag=None, argument=False, aliases=(),
                                             toml_aliases=(), cli=False, hidden=True)


@functools.cache
def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)  # evaluates every annotation: once per class, not once per field check


def kind_of(cls, name: str) -> tuple[str, bool]:
    """(kind, optional) of a field from its type hint: ``int | None`` -> (INT, True)."""
    hint = _hints(cls)[name]
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = len(args) < len(typing.get_args(hint)), args[0]
    origin = typing.get_origin(hint) or hint
    kinds = {int: INT, float: FLOAT, str: STR, bool: BOOL, tuple: LIST, list: LIST, dict: DICT}
    return kinds.get(origin, STR), optional


@functools.cache
def is_path(cls, name: str) -> bool:
    """A ``Path`` field: a string kind to the CLI and TOML, a ``Path`` in the config."""
    hint = _hints(cls)[name]
    return hint is Path or Path in typing.get_args(hint)


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _article(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _is(kind: str, value: Any) -> bool:
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == FLOAT:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, {STR: str, BOOL: bool, LIST: (list, tuple), DICT: dict}[kind])


def _bounds(m: dict, value: Any, kind: str) -> str | None:
    """What ``value`` should be when it is out of the field's bounds (e.g. "in [0, 1)"), or None."""
    lo, hi = m["low"] if m["low"] is not None else m["above"], m["high"] if m["high"] is not None else m["below"]
    inside = ((m["low"] is None or value >= m["low"]) and (m["above"] is None or value > m["above"])
              and (m["high"] is None or value <= m["high"]) and (m["below"] is None or value < m["below"]))
    if inside:
        return None
    if lo is not None and hi is not None:
        return f"in {'[' if m['low'] is not None else '('}{lo}, {hi}{']' if m['high'] is not None else ')'}"
    if kind == INT and m["low"] == 1:
        return "a positive integer"
    if lo is not None:
        return f"{'>=' if m['low'] is not None else '>'} {lo}"
    return f"{'<=' if m['high'] is not None else '<'} {hi}"


def normalize(cls, name: str, value: Any) -> Any:
    """Check one value against its field's declaration; returns it in canonical form (lists as tuples).

    Raises:
        SettingError: wrong kind, outside the choices or the bounds, naming the field.
    """
    f = fields_of(cls)[name]
    m = meta(f)
    kind, optional = kind_of(cls, name)
    if value is None:
        if optional or default_of(f) is None:
            return None
        raise SettingError(name, f"must be {_article(kind)}, got nothing")
    if kind == FLOAT and _is(INT, value):
        value = float(value)
    if is_path(cls, name) and isinstance(value, (str, os.PathLike)):
        return Path(value)  # a command line gives a string, Python callers a Path
    if not _is(kind, value):
        raise SettingError(name, f"must be {_article(kind)}, got {type(value).__name__} {value!r}")
    if kind == LIST:
        return _normalize_list(name, m, tuple(value), required=bool(default_of(f)))
    if m["choices"] and value not in m["choices"]:
        raise SettingError(name, f"must be one of {', '.join(map(str, m['choices']))}, got {value!r}")
    if kind in (INT, FLOAT):
        want = _bounds(m, value, kind)
        if want:
            raise SettingError(name, f"must be {want}, got {value!r}")
    return value


def _normalize_list(name: str, m: dict, items: tuple, required: bool) -> tuple:
    choices, every = m["choices"], m["every"]
    if choices and every and tuple(str(i).lower() for i in items) == (every,):
        return tuple(choices)
    out = []
    for i in items:
        if every and m["item"] == INT and isinstance(i, str) and i.lower() == every:
            out.append(every)
            continue
        if not _is(m["item"], i):
            word = f" or {every!r}" if every and m["item"] == INT else ""
            raise SettingError(name, f"must be a list of {m['item']}s{word}, got {type(i).__name__} {i!r}")
        if choices and i not in choices:
            extra = f" or {every}" if every else ""
            raise SettingError(name, f"unknown value {i!r}; choose from {', '.join(map(str, choices))}{extra}")
        if m["item"] == INT:
            want = _bounds(m, i, INT)
            if want:
                what = "positive integers" if want == "a positive integer" else f"integers {want}"
                raise SettingError(name, f"must be a list of {what}, got {i!r}")
        out.append(i)
    if not out and required:  # a list whose default has items needs at least one
        raise SettingError(name, "must not be empty")
    return tuple(dict.fromkeys(out))


def check(config) -> None:
    """Validate every declared field of a dataclass instance in place (lists become tuples).

    Called from ``__post_init__``; a frozen dataclass gets its canonical values through ``object.__setattr__``.

    Raises:
        SettingError: the first bad field.
    """
    cls = type(config)
    for f in dataclasses.fields(cls):
        if "setting" not in f.metadata or kind_of(cls, f.name)[0] == DICT:
            continue
        value = normalize(cls, f.name, getattr(config, f.name))
        object.__setattr__(config, f.name, value)


def parse_text(cls, name: str, text: str) -> Any:
    """A command-line string for a list field -> a list of items ('1,all' -> [1, 'all'])."""
    m = meta(fields_of(cls)[name])
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if m["item"] == INT:
        out = []
        for t in items:
            if m["every"] and t.lower() == m["every"]:
                out.append(m["every"])
                continue
            try:
                out.append(int(t))
            except ValueError:
                raise SettingError(name, f"{t!r} is not an integer (give a comma list such as 1,8)") from None
        return out
    return [t.lower() if m["choices"] else t for t in items]


def as_text(value: Any) -> str | None:
    """A list default as the command line spells it: (1, 'all') -> '1,all'."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return value


def flag_of(cls, name: str) -> str:
    """The CLI spelling of a field: ``batch_size`` -> ``--batch-size`` (or its declared ``flag``)."""
    f = fields_of(cls).get(name)
    m = meta(f) if f is not None else {"flag": None, "argument": False}
    if m["argument"]:
        return name.upper()
    return (m["flag"] or "--" + name.replace("_", "-")).split("/")[0]
