"""Any Keras model as a transfer base: a model file (``.h5``/``.keras``) or ``keras:NAME`` (tf_keras.applications).

The base is rebuilt flat (its layers copied one by one into one functional graph, so tfmot and the
exporters see no nested model) behind the toolkit's input: RGB 0-255 at ``--image-size``. The base's own
preprocessing becomes layers in front of it::

    image (H, W, 3) -> preprocess (colour -> gray and scaling, one affine map) -> preprocess_resize (to the
    base's input size, if it has one and it differs) -> the base's layers up to the feature layer -> fc

A model file's scaling is given with ``--preprocess`` (default: ``none`` if the file already starts with
a Rescaling/Normalization layer, else ``scale``); a ``keras:`` model's is read off its module's own
``preprocess_input``. ``keras:NAME?alpha=0.25&minimalistic=1`` passes builder options.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.models.registry import ModelSpec, register_resolver

KERAS_PREFIX = "keras:"
MODEL_SUFFIXES = (".h5", ".hdf5", ".keras")
SCALINGS = {"scale": (1 / 255, 0.0), "symmetric": (1 / 127.5, -1.0), "none": (1.0, 0.0)}  # x * a + b
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 RGB -> gray, as OpenCV's cvtColor
CLASSIFIER_ACTIVATIONS = ("softmax", "sigmoid")


def affine(kind: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """A named scaling as (3 x channels matrix, bias): RGB 0-255 -> what the base takes (1 channel: gray)."""
    if kind == "imagenet" and channels == 3:  # Keras' "caffe" mode: BGR, ImageNet mean subtracted
        from toolkit.models.layers import IMAGENET_RGB_MEAN

        return np.eye(3, dtype=np.float32)[::-1].copy(), -np.array(IMAGENET_RGB_MEAN[::-1], np.float32)
    if kind not in SCALINGS:
        raise ToolkitError(f"--preprocess {kind}: a base takes one of {', '.join(SCALINGS)}, or imagenet (3 channels)")
    a, b = SCALINGS[kind]
    matrix = np.array(LUMA, np.float32)[:, None] if channels == 1 else np.eye(3, dtype=np.float32)
    return matrix * a, np.full(channels, b, np.float32)


def preprocess_layers(x, matrix: np.ndarray, bias: np.ndarray, size: tuple | None, taken: set[str]):
    """Apply the base's preprocessing to the image tensor ``x`` as layers; returns the new tensor.

    One affine map per pixel (a frozen 1x1 convolution when it mixes channels or changes their count, else
    Rescaling) then a bilinear resize when ``size`` differs from the image's.
    """
    from toolkit._keras import keras

    k = keras()
    name = _free("preprocess", taken)
    diagonal = matrix.shape == (3, 3) and np.allclose(matrix, np.diag(np.diag(matrix)))
    if diagonal and np.allclose(np.diag(matrix), matrix[0, 0]) and np.allclose(bias, bias[0]):
        scale, offset = float(matrix[0, 0]), float(bias[0])
        layer = (k.layers.Identity(name=name) if (scale, offset) == (1.0, 0.0)
                 else k.layers.Rescaling(scale, offset, name=name))
        x = layer(x)
    else:
        conv = k.layers.Conv2D(matrix.shape[1], 1, name=name, trainable=False)
        x = conv(x)
        conv.set_weights([matrix.reshape(1, 1, *matrix.shape), bias])
    if size is not None and tuple(size) != tuple(x.shape[1:3]):
        x = k.layers.Resizing(int(size[0]), int(size[1]), name=_free("preprocess_resize", taken))(x)
    return x


def _free(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    return name


def rebuild(src, x, keep: str | None = None):
    """Copy ``src``'s layers (new objects, same names and weights) onto tensor ``x``; returns {name: tensor}.

    Nested models are unrolled into the same graph. ``keep``: stop once that layer is computed.
    """
    from toolkit._keras import keras, tf

    k = keras()
    if not getattr(src, "_is_graph_network", False) or len(src.inputs) != 1:
        raise ToolkitError(f"{src.name}: only a functional or sequential Keras model with one input can be a base")
    usage = src._tensor_usage_count
    tensors = {str(id(src.inputs[0])): [x] * usage[str(id(src.inputs[0]))]}
    out: dict[str, object] = {}
    for depth in sorted(src._nodes_by_depth, reverse=True):
        for node in src._nodes_by_depth[depth]:
            if node.is_input or any(t not in tensors for t in node.flat_input_ids):
                continue
            args, kwargs = node.map_arguments(tensors)
            layer = node.layer
            if isinstance(layer, k.Model):  # flatten: its layers join this graph
                inner = rebuild(layer, args[0])
                out.update(inner)
                y = inner[layer.layers[-1].name]
            else:
                clone = type(layer).from_config(layer.get_config())
                y = clone(*args, **kwargs)
                clone.set_weights(layer.get_weights())
                out[layer.name] = y
            for tid, t in zip(node.flat_output_ids, tf().nest.flatten(y)):
                tensors[tid] = [t] * usage.get(tid, 1)
            if keep is not None and keep in out:
                return out
    return out


def default_feature_layer(src) -> str:
    """The layer whose output feeds the source's classifier; the last layer for a headless base."""
    last = src.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    if activation not in CLASSIFIER_ACTIVATIONS:
        return last.name
    weighted = [la for la in src.layers if la.weights]
    node = weighted[-1].inbound_nodes[-1] if weighted else last.inbound_nodes[-1]
    return node.inbound_layers.name if not isinstance(node.inbound_layers, list) else node.inbound_layers[0].name


def flat_model(src, input_shape: tuple, classes: int, matrix, bias, feature_layer: str, name: str):
    """Image in -> preprocessing -> ``src`` up to ``feature_layer`` (flattened if a map) -> a new classifier."""
    from toolkit._keras import keras
    from toolkit.models.layers import classifier

    k = keras()
    taken = {la.name for la in src.layers}
    x_in = k.Input(shape=input_shape, name=_free("image", taken))
    size = src.input_shape[1:3] if None not in src.input_shape[1:3] else None
    x = preprocess_layers(x_in, matrix, bias, size, taken)
    tensors = rebuild(src, x, keep=feature_layer)
    if feature_layer not in tensors:
        raise ToolkitError(f"{name}: no layer {feature_layer!r} in the base")
    x = tensors[feature_layer]
    if len(x.shape) > 2:
        x = k.layers.Flatten(name=f"{feature_layer}_flat")(x)
    out = classifier(classes, _free("fc", taken))(x)
    return k.Model(x_in, out, name=re.sub(r"\W+", "_", name).strip("_") or "base")


@functools.lru_cache(maxsize=8)
def _load_file(path: str, mtime: float):
    from toolkit.models.files import load_keras_model

    return load_keras_model(path)


def load_file(path: Path):
    """A model file, loaded once per process (compile=False; no code from the file runs)."""
    if not path.is_file():
        raise ToolkitError(f"{path}: model file not found")
    return _load_file(str(path.resolve()), path.stat().st_mtime)


def _guess_scaling(src) -> str:
    first = [la for la in src.layers if la.weights or type(la).__name__ in ("Rescaling", "Normalization")][:1]
    return "none" if first and type(first[0]).__name__ in ("Rescaling", "Normalization") else "scale"


def file_spec(path: Path, name: str | None = None, **extra) -> ModelSpec:
    """A ModelSpec for a Keras model file: its architecture and, by default, its weights."""
    src = load_file(path)
    if len(src.input_shape) != 4 or src.input_shape[-1] not in (1, 3):
        raise ToolkitError(f"{path}: a base takes images (H, W, 1 or 3), this model takes {src.input_shape}")
    feature = default_feature_layer(src)
    flat = f"{feature}_flat" if len(src.get_layer(feature).output_shape) > 2 else feature
    size = src.input_shape[1] or 64

    def build(input_shape=(size, size, 3), classes: int = 2, weights: str | None = None,
              preprocess: str | None = None):
        model = flat_model(src, input_shape, classes, *affine(preprocess or _guess_scaling(src), src.input_shape[-1]),
                           feature, name or path.stem)
        if weights == "none":
            _reinitialise(model)
        return model

    return ModelSpec(name or str(path), build, flat, ("fc",), size, f"Keras model file {path.name}",
                     own_weights=True, **extra)


def _reinitialise(model) -> None:
    """Fresh weights for every layer but the preprocessing (random initial weights, for tests)."""
    for layer in model.layers:
        if layer.weights and not layer.name.startswith("preprocess"):
            fresh = type(layer).from_config(layer.get_config())
            fresh.build(layer.input_shape)
            layer.set_weights(fresh.get_weights())


def app_spec(name: str) -> ModelSpec:
    """A ModelSpec for ``keras:NAME[?option=value&...]``: the application without its top, pooled."""
    from toolkit._keras import keras

    app, _, query = name[len(KERAS_PREFIX):].partition("?")
    fn = getattr(keras().applications, app, None)
    if not callable(fn) or not app[:1].isupper():
        raise ToolkitError(f"{name}: tf_keras.applications has no model {app!r} (e.g. keras:MobileNetV3Small)")
    options = {k: _literal(v) for k, v in parse_qsl(query)}

    def build(input_shape=(224, 224, 3), classes: int = 2, weights: str | None = None,
              preprocess: str | None = None):
        src = _application(fn, name, tuple(input_shape), weights or "imagenet", options)
        matrix, bias = affine(preprocess, 3) if preprocess else probe_preprocessing(fn, name)
        return flat_model(src, tuple(input_shape), classes, matrix, bias, src.layers[-1].name, app)

    return ModelSpec(name, build, "avg_pool", ("fc",), 224, f"tf_keras.applications.{app}", weights="imagenet",
                     own_weights=True)


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _application(fn, name: str, input_shape: tuple, weights: str, options: dict):
    if weights not in ("imagenet", "none", "random"):
        raise ToolkitError(f"--weights {weights}: {name} takes imagenet, none (random weights), a run folder or a "
                           "model file with the same layers")
    try:
        src = fn(input_shape=input_shape, include_top=False, pooling="avg",
                 weights="imagenet" if weights == "imagenet" else None, **options)
    except (TypeError, ValueError) as exc:  # bad options or an input size the model refuses
        raise ToolkitError(f"{name}: {str(exc).strip().splitlines()[0][:200]}") from exc
    except Exception as exc:  # URLError, HTTP errors, a hash mismatch: all mean "get the file yourself"
        url = re.search(r"https?://\S+?(?=[\s:]|$)", str(exc))
        raise ToolkitError(f"cannot download the ImageNet weights of {name} ({type(exc).__name__}); download "
                           f"{url.group(0) if url else 'them'} to {Path.home() / '.keras' / 'models'}/, "
                           "or pass --weights none") from exc
    src.layers[-1]._name = "avg_pool"  # one name whatever the application calls its pooling
    return src


def probe_preprocessing(fn, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The application's ``preprocess_input`` as (matrix, bias), measured on probe pixels and checked."""
    pre = getattr(sys.modules.get(fn.__module__), "preprocess_input", None)
    if pre is None:
        return affine("none", 3)
    probe = np.array([[[[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]]], np.float32)
    out = np.asarray(pre(probe.copy()), np.float32)[0, 0]
    bias = out[0]
    matrix = np.stack([(out[i + 1] - bias) / 255 for i in range(3)])
    check = np.random.default_rng(0).uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
    if not np.allclose(np.asarray(pre(check.copy()), np.float32), check @ matrix + bias, atol=1e-3):
        raise ToolkitError(f"{name}: its preprocess_input is not a per-pixel affine map; pass --preprocess")
    return matrix, bias


@register_resolver
def resolve(name: str) -> ModelSpec | None:
    """``keras:NAME`` or a path ending in .h5/.hdf5/.keras -> its ModelSpec; anything else -> None."""
    if name.startswith(KERAS_PREFIX):
        return app_spec(name)
    path = Path(name).expanduser()
    if path.suffix in MODEL_SUFFIXES:
        return file_spec(path)
    return None
