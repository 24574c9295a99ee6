"""HappyModel: the seed's small CNN for the Happy House (is the person at the door smiling?)."""

from __future__ import annotations

from toolkit._keras import keras
from toolkit.models.layers import classifier, preprocessing_layer
from toolkit.models.registry import register_model


@register_model("happy", penultimate="flatten", head=("fc",))
def happy_model(input_shape=(64, 64, 3), classes: int = 2, preprocess: str = "scale"):
    """HappyModel: pad 3, conv 7x7x32, batch norm, ReLU, max-pool 2x2, dense (37,633 params at 64x64)."""
    k = keras()
    x_in = k.Input(shape=input_shape, name="image")
    x = preprocessing_layer(preprocess)(x_in)
    x = k.layers.ZeroPadding2D((3, 3), name="pad0")(x)
    x = k.layers.Conv2D(32, (7, 7), strides=(1, 1), name="conv0")(x)
    x = k.layers.BatchNormalization(axis=3, name="bn0")(x)
    x = k.layers.Activation("relu", name="relu0")(x)
    x = k.layers.MaxPooling2D((2, 2), name="max_pool")(x)
    x = k.layers.Flatten(name="flatten")(x)
    out = classifier(classes, "fc")(x)
    return k.Model(inputs=x_in, outputs=out, name="HappyModel")
