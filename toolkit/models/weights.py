"""Loading Keras Applications' ResNet50 weights into the seed's ResNet50.

The official files (``resnet50_weights_tf_dim_ordering_tf_kernels[_notop].h5``) name layers the
Keras way (``conv2_block1_0_conv`` ...) and list the shortcut convolution before the main path, so
loading by position would scramble them. Here each seed layer is matched to its Keras twin by name.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError

IMAGENET_FILES = {
    True: "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
    False: "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
_BRANCH = {"1": 0, "2a": 1, "2b": 2, "2c": 3}  # seed branch -> Keras conv index within the block
_SEED_NAME = re.compile(r"^(res|bn)(\d)([a-z])_branch(1|2a|2b|2c)$")


def keras_name(seed_name: str) -> str | None:
    """The Keras Applications layer name matching a seed ResNet50 layer, or None if it has none."""
    if seed_name == "conv1":
        return "conv1_conv"
    if seed_name == "bn_conv1":
        return "conv1_bn"
    if re.fullmatch(r"fc\d+", seed_name):
        return "predictions"
    m = _SEED_NAME.match(seed_name)
    if not m:
        return None
    kind, stage, block, branch = m.groups()
    suffix = "conv" if kind == "res" else "bn"
    return f"conv{stage}_block{ord(block) - ord('a') + 1}_{_BRANCH[branch]}_{suffix}"


def _apply(model, source: dict[str, list[np.ndarray]], flip_rgb: bool, origin: str) -> int:
    loaded = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        key = keras_name(layer.name)
        if key is None or key not in source:
            if key == "predictions" or (key is None and layer.name == "preprocess"):
                continue  # a new head (or preprocessing) keeps its fresh weights
            raise ToolkitError(f"{origin}: no weights for layer {layer.name!r} (Keras name {key!r}); "
                               "is this a ResNet50 weight file?")
        weights = source[key]
        if key == "predictions" and [w.shape for w in weights] != [tuple(w.shape) for w in layer.weights]:
            continue  # different number of classes: the head is replaced
        if key == "conv1_conv" and flip_rgb:
            # The files expect BGR input; flipping conv1's input channels makes them take RGB.
            weights = [weights[0][:, :, ::-1, :], *weights[1:]]
        expected = [tuple(w.shape) for w in layer.weights]
        if [tuple(w.shape) for w in weights] != expected:
            raise ToolkitError(f"{origin}: layer {key!r} has shapes {[w.shape for w in weights]}, "
                               f"the model expects {expected}")
        layer.set_weights(weights)
        loaded += 1
    return loaded


def read_keras_h5(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Read a Keras ``save_weights`` HDF5 file into {layer name: [arrays in the layer's order]}."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"{path}: weight file not found")
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            names = [n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]]
            out = {}
            for name in names:
                group = root[name]
                wnames = [w.decode() if isinstance(w, bytes) else w for w in group.attrs["weight_names"]]
                out[name] = [np.asarray(group[w]) for w in wnames]
            return out
    except (OSError, KeyError) as exc:
        raise ToolkitError(f"{path}: not a Keras weight file ({exc})") from exc


def load_resnet50_weights(model, source, *, flip_rgb: bool | None = None) -> int:
    """Copy Keras Applications ResNet50 weights into a seed-named ResNet50.

    Args:
        model: a model built by ``build_model("resnet50", ...)`` (either stem).
        source: a path to a Keras weight file, or a tf_keras ResNet50 model (e.g.
            ``tf_keras.applications.ResNet50(weights=None)``).
        flip_rgb: reverse conv1's input channels (the files were trained on BGR). Default: True when
            the model's preprocessing is ``imagenet`` (RGB in, mean subtracted), else False.

    Returns:
        The number of layers whose weights were set. A head of a different size is left as built.
    """
    if flip_rgb is None:
        flip_rgb = type(model.get_layer("preprocess")).__name__ == "Normalization"
    if isinstance(source, (str, Path)):
        weights, origin = read_keras_h5(source), str(source)
    else:
        weights = {layer.name: layer.get_weights() for layer in source.layers if layer.weights}
        origin = source.name
    return _apply(model, weights, flip_rgb, origin)
