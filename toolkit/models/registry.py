"""A registry of plain model builders, looked up by name.

Every builder takes ``input_shape`` (H, W, 3) and ``classes`` and returns a flat tf_keras ``Model``
whose input is RGB in 0-255: preprocessing is the model's first layer, so exported files need only a
resize. Tiny variants are registered like the real ones so tests can parametrize over
:func:`list_models`.

Builders register themselves with :func:`register_model` when their module is imported; the
``toolkit.models`` package imports them all, and Python runs it before this module is reachable, so
the registry never imports a builder (no import cycle between the two).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from toolkit.errors import ToolkitError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable
    penultimate: str  # the layer whose output feeds the classifier head (cached by feature caching)
    head: tuple  # names of the layers after ``penultimate`` that transfer learning replaces
    default_input: int = 64
    description: str = ""
    tiny: bool = False  # a small stand-in for tests: same code path, a fraction of the weights
    weights: str | None = None  # the pretrained weights --weights defaults to (None: the user must name some)
    feature_layer: str | None = None  # where finetune cuts by default (None: at ``penultimate``)
    own_weights: bool = False  # the builder loads pretrained weights itself (``weights=`` keyword): a file base
    fetches: bool = False  # building it may download a file (tests that must stay offline skip it)
    # Where its pretrained weights come from, for the export's licence record: {"wheel": a fetch.WheelFile,
    # "licence_name": SPDX id, "licence_file": its name in an export folder}. None: no third-party weights.
    third_party: dict | None = None


_REGISTRY: dict[str, ModelSpec] = {}
# Functions name -> ModelSpec | None for names that are not registered (a model file, keras:NAME); see
# toolkit.models.external. Tried in order after the registry.
_RESOLVERS: list[Callable] = []


def register_model(
    name: str, *, penultimate: str, head: tuple = (), default_input: int = 64, tiny: bool = False, **extra
) -> Callable:
    """Decorator: add a builder to the registry under ``name`` (``extra``: further ModelSpec fields)."""

    def wrap(fn: Callable) -> Callable:
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelSpec(name, fn, penultimate, tuple(head), default_input, doc[0] if doc else "", tiny,
                                    **extra)
        return fn

    return wrap


def register_resolver(fn: Callable) -> Callable:
    """Add a function that turns an unregistered model name into a ModelSpec (or returns None)."""
    _RESOLVERS.append(fn)
    return fn


def list_models(include_tiny: bool = True) -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(n for n, s in _REGISTRY.items() if include_tiny or not s.tiny)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; raises a one-line ToolkitError listing the known names."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    for resolve in _RESOLVERS:
        spec = resolve(name)
        if spec is not None:
            return spec
    raise ToolkitError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}, a Keras model file "
                       "(.h5/.keras) or keras:NAME (a tf_keras.applications model)")


def build_model(name: str, input_shape: tuple | int = 64, classes: int = 2, **kwargs):
    """Build the registered model ``name`` for ``input_shape`` (an int means a square RGB image).

    Raises:
        ToolkitError: unknown model name, fewer than 2 classes, or an input too small for the model.
    """
    spec = get_spec(name)
    if isinstance(input_shape, int):
        input_shape = (input_shape, input_shape, 3)
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ToolkitError(f"input shape must be (height, width, 3) RGB, got {input_shape}")
    if classes < 2:
        raise ToolkitError(f"a classifier needs at least 2 classes, got {classes}")
    return spec.builder(input_shape=input_shape, classes=classes, **kwargs)
