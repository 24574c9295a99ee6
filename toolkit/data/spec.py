"""Parse a data spec string: a path, a path with ``?n=N&seed=S&crop=face``, or ``synthetic:NAME?...``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from toolkit.errors import ToolkitError

SYNTHETIC_PREFIX = "synthetic:"
# Options every spec accepts; a typo must fail loudly instead of silently training on all the data.
OPTIONS = ("n", "seed", "crop")
# crop=face: every photo is cut to its largest face by the door's own detector (BlazeFace) before resizing.
CROPS = ("face",)


@dataclass(frozen=True)
class Spec:
    """A parsed data spec.

    Attributes:
        text: the spec as the user wrote it (recorded in run configs).
        kind: "synthetic" or "path".
        target: the synthetic task name, or the filesystem path.
        n: keep a stratified subsample of this many items (for synthetic sets: generate this many).
        seed: seed of that subsample (for synthetic sets: of the generator).
        crop: "face" to crop every photo to its largest face first, else None.
    """

    text: str
    kind: str
    target: str
    n: int | None = None
    seed: int = 0
    crop: str | None = None


def parse_spec(text: str) -> Spec:
    """Split ``text`` into source and options.

    Raises:
        ToolkitError: empty spec, unknown option or a value that is not an integer.
    """
    text = str(text).strip()
    if not text:
        raise ToolkitError("data spec is empty: give an image folder, a .h5 file or synthetic:happy")
    if text.startswith(SYNTHETIC_PREFIX):
        kind, rest = "synthetic", text[len(SYNTHETIC_PREFIX) :]
    else:
        kind, rest = "path", text
    # A path that really contains '?' is taken literally when it exists.
    if kind == "path" and "?" in rest and Path(rest).exists():
        return Spec(text, kind, rest)
    target, _, query = rest.partition("?")
    options = _parse_query(text, query)
    n = options.get("n")
    if n is not None and n < 1:
        raise ToolkitError(f"data spec {text!r}: n must be a positive integer, got n={n}")
    seed = options.get("seed", 0)
    if seed < 0:
        raise ToolkitError(f"data spec {text!r}: seed must be >= 0, got seed={seed}")
    return Spec(text, kind, target, n, seed, options.get("crop"))


def _parse_query(text: str, query: str) -> dict:
    options: dict = {}
    if not query:
        return options
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ToolkitError(
            f"data spec {text!r}: cannot parse options {query!r}; write them as ?n=100&seed=1"
        ) from None
    for key, value in pairs:
        if key not in OPTIONS:
            raise ToolkitError(
                f"data spec {text!r}: unknown option {key!r}; known options: {', '.join(OPTIONS)}"
            )
        if key in options:
            raise ToolkitError(f"data spec {text!r}: option {key!r} given twice")
        if key == "crop":
            if value not in CROPS:
                raise ToolkitError(f"data spec {text!r}: crop={value!r}; the only crop is crop=face")
            options[key] = value
            continue
        try:
            options[key] = int(value)
        except ValueError:
            raise ToolkitError(f"data spec {text!r}: option {key}={value!r} must be an integer") from None
    return options
