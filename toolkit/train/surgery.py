"""Model surgery for transfer learning: copy pretrained weights, cut the base, freeze and unfreeze layers."""

from __future__ import annotations

import logging
from pathlib import Path

from toolkit.errors import ToolkitError

log = logging.getLogger("toolkit.finetune")


def copy_weights(model, source, head: set[str], origin: str) -> int:
    """Copy weights layer by layer by name into every layer of ``model`` but the head; returns the count.

    Raises:
        ToolkitError: a layer missing from the source or with other shapes (the weights are for another model).
    """
    from toolkit.models.weights import load_resnet50_weights

    if source is None:  # the builder loaded the base's own weights (a model file, keras:NAME, face)
        return sum(1 for la in model.layers if la.weights and la.name not in head)
    if isinstance(source, Path):  # Keras Applications' layout: matched by its names, conv1 flipped to RGB
        return load_resnet50_weights(model, source)
    arrays = source if isinstance(source, dict) else {la.name: la.get_weights() for la in source.layers if la.weights}
    loaded = 0
    for layer in model.layers:
        if not layer.weights or layer.name in head:
            continue
        if layer.name not in arrays:
            raise ToolkitError(f"{origin}: no weights for layer {layer.name!r}; were they saved from {model.name}?")
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in arrays[layer.name]]
        if got != expected:
            raise ToolkitError(f"{origin}: layer {layer.name!r} has shapes {got}, the model expects {expected}")
        layer.set_weights(arrays[layer.name])
        loaded += 1
    return loaded


def cut_model(model, layer: str, penultimate: str, classes: int):
    """``model`` up to ``layer``, then a new head: -> (the new model, the last layer of the base).

    A feature map (4-D output) is flattened, not pooled, so the classifier sees where each feature fired.
    The head standardises the features (BatchNormalization) before the classifier: raw activations of an
    inner layer are large and uneven, and without it a head trained on ~200 images picked its best epoch
    by luck (test accuracy 0.66 vs 0.81 for the same features in two runs).

    Raises:
        ToolkitError: ``layer`` is not a layer between the input and ``penultimate``; names a few that are.
    """
    from toolkit._keras import keras
    from toolkit.models.layers import classifier

    k = keras()
    check_feature_layer(model, layer, penultimate)
    x = model.get_layer(layer).output
    fed_by = layer
    if len(x.shape) > 2:
        fed_by = f"{layer}_flat"
        x = k.layers.Flatten(name=fed_by)(x)
    x = k.layers.BatchNormalization(name=f"{layer}_norm")(x)
    out = classifier(classes, model.layers[-1].name)(x)
    cut = k.Model(model.input, out, name=model.name)
    log.info("cut at %s: the new classifier reads %s values", layer, f"{int(x.shape[-1]):,}")
    return cut, fed_by


def check_feature_layer(model, layer: str, penultimate: str) -> None:
    """Raise unless ``layer`` is a layer of ``model`` between its input and ``penultimate`` (inclusive).

    Raises:
        ToolkitError: names a few layers that are (the last of each ResNet stage, else the last three).
    """
    names = [la.name for la in model.layers]
    usable = names[1:names.index(penultimate) + 1]  # the penultimate layer itself: a standardised head on it
    if layer not in usable:
        last_of_group: dict[str, str] = {}
        for name in usable:
            if name.endswith("_out"):
                last_of_group[name[:4]] = name
        hint = ", ".join(list(last_of_group.values()) or usable[-3:])
        raise ToolkitError(f"--feature-layer {layer}: not a layer of {model.name} up to {penultimate}; "
                           f"for example {hint} ('toolkit summary {model.name.lower()}' lists them all)")


def freeze_layers(model, n: int) -> None:
    """Freeze the first ``n`` entries of ``model.layers``; the rest train.

    A frozen BatchNormalization layer runs in inference mode in tf_keras (``trainable=False`` overrides
    ``training=True``): its moving statistics stay those of the pretraining data. Preprocessing layers
    never train (a file base's colour conversion is a fixed 1x1 convolution).
    """
    for i, layer in enumerate(model.layers):
        layer.trainable = i >= n and not layer.name.startswith("preprocess")


def unfreeze_from(model, k: int) -> None:
    """Stage 2: layers k.. train, except BatchNormalization, which keeps its pretrained statistics."""
    for i, layer in enumerate(model.layers):
        layer.trainable = i >= k and type(layer).__name__ != "BatchNormalization" and not layer.name.startswith(
            "preprocess")


def frozen_count(freeze: str, n_layers: int, n_base: int) -> int:
    """--freeze as a number of layers; more than the layers before the head is an error naming the count."""
    if freeze == "all":
        return n_base
    if freeze == "none":
        return 0
    n = int(freeze)
    if n > n_base:
        raise ToolkitError(f"--freeze {n}: the model has {n_layers} layers, {n_base} before the head; "
                           f"give at most {n_base} (or --freeze all)")
    return n
