"""Shared layers: the preprocessing that makes every model take raw RGB 0-255 pixels."""

from __future__ import annotations

from toolkit._keras import keras
from toolkit.errors import ToolkitError

# Keras' "caffe" ImageNet preprocessing subtracts these from BGR pixels; here in RGB order, because
# the ImageNet weight loader flips conv1's input channels instead of flipping every image.
IMAGENET_RGB_MEAN = (123.68, 116.779, 103.939)
PREPROCESSING = ("scale", "imagenet", "none")


def preprocessing_layer(kind: str):
    """The model's first layer: ``scale`` maps 0-255 to 0-1, ``imagenet`` subtracts the ImageNet
    mean (for Keras ImageNet weights), ``none`` passes pixels through (for weight-compatibility tests).
    """
    k = keras()
    if kind == "scale":
        return k.layers.Rescaling(1.0 / 255, name="preprocess")
    if kind == "imagenet":
        return k.layers.Normalization(mean=list(IMAGENET_RGB_MEAN), variance=[1.0, 1.0, 1.0], name="preprocess")
    if kind == "none":
        return k.layers.Identity(name="preprocess")
    raise ToolkitError(f"unknown preprocessing {kind!r}; choose one of: {', '.join(PREPROCESSING)}")


def classifier(classes: int, name: str):
    """The head: one sigmoid unit for 2 classes (P of class 1), softmax over ``classes`` otherwise."""
    k = keras()
    if classes == 2:
        return k.layers.Dense(1, activation="sigmoid", name=name)
    return k.layers.Dense(classes, activation="softmax", name=name)
