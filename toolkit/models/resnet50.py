"""ResNet50 built from the seed's ``identity_block`` and ``convolutional_block``.

Layer names follow the seed (``res2a_branch2a``, ``bn2a_branch2a`` ...). Two stems are offered:

- ``seed`` (default): the seed's stem, max-pool without padding (15x15 after it at 64x64 input).
- ``keras``: Keras Applications' stem (pad 1 before the max-pool: 16x16) and its BatchNorm epsilon,
  so the official ImageNet weights reproduce Keras' outputs exactly.

Both have the same parameters, so ImageNet weights load into either (see :mod:`.weights`).
"""

from __future__ import annotations

from toolkit._keras import keras
from toolkit.errors import ToolkitError
from toolkit.models.layers import classifier, preprocessing_layer
from toolkit.models.registry import register_model

STEMS = ("seed", "keras")
_BN_EPS = {"seed": 1e-3, "keras": 1.001e-5}  # tf_keras defaults vs Keras Applications' ResNet
# Keras' default 0.99 lets the moving statistics trail the weights by ~100 steps; a small data set
# trained from scratch gets only ~50 steps an epoch, so validation (inference mode) sees stale
# statistics and predicts one class for many epochs. 0.9 tracks within ~10 steps.
BN_MOMENTUM = 0.9
RESNET50_STAGES = ((3, (64, 64, 256)), (4, (128, 128, 512)), (6, (256, 256, 1024)), (3, (512, 512, 2048)))
TINY_STAGES = ((1, (8, 8, 32)), (1, (16, 16, 64)), (1, (16, 16, 64)), (1, (32, 32, 128)))


def identity_block(x, f: int, filters, stage: int, block: str, eps: float = 1e-3):
    """Residual block whose shortcut is the identity (input and output shapes match).

    Args:
        x: input tensor (N, H, W, C) with C == filters[2].
        f: size of the middle convolution's window.
        filters: (F1, F2, F3) filters of the three main-path convolutions.
        stage, block: position in the network, used to name the layers (``res{stage}{block}_branch2a``).
    """
    k = keras()
    conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
    f1, f2, f3 = filters
    shortcut = x
    x = k.layers.Conv2D(f1, (1, 1), strides=(1, 1), padding="valid", name=conv + "2a")(x)
    x = k.layers.BatchNormalization(axis=3, epsilon=eps, momentum=BN_MOMENTUM, name=bn + "2a")(x)
    x = k.layers.Activation("relu")(x)
    x = k.layers.Conv2D(f2, (f, f), strides=(1, 1), padding="same", name=conv + "2b")(x)
    x = k.layers.BatchNormalization(axis=3, epsilon=eps, momentum=BN_MOMENTUM, name=bn + "2b")(x)
    x = k.layers.Activation("relu")(x)
    x = k.layers.Conv2D(f3, (1, 1), strides=(1, 1), padding="valid", name=conv + "2c")(x)
    x = k.layers.BatchNormalization(axis=3, epsilon=eps, momentum=BN_MOMENTUM, name=bn + "2c")(x)
    x = k.layers.Add(name=f"res{stage}{block}_add")([x, shortcut])
    return k.layers.Activation("relu", name=f"res{stage}{block}_out")(x)


def convolutional_block(x, f: int, filters, stage: int, block: str, s: int = 2, eps: float = 1e-3):
    """Residual block with a 1x1 convolution on the shortcut, used where the shape changes.

    Args:
        x: input tensor.
        f: size of the middle convolution's window.
        filters: (F1, F2, F3) filters of the three main-path convolutions.
        stage, block: position in the network, used to name the layers.
        s: stride of the first 1x1 convolution and of the shortcut (2 halves height and width).
    """
    k = keras()
    conv, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
    f1, f2, f3 = filters
    shortcut = k.layers.Conv2D(f3, (1, 1), strides=(s, s), padding="valid", name=conv + "1")(x)
    shortcut = k.layers.BatchNormalization(axis=3, epsilon=eps, momentum=BN_MOMENTUM, name=bn + "1")(shortcut)
    x = k.layers.Conv2D(f1, (1, 1), strides=(s, s), padding="valid", name=conv + "2a")(x)
    x = k.layers.BatchNormalization(axis=3, epsilon=eps, momentum=BN_MOMENTUM, name=bn + "2a")(x)
    x = k.layers.Activation("relu")(x)
    x = k.layers.Conv2D(f2, (f, f), strides=(1, 1), padding="same", name=conv + "2b")(x)
    x = k.layers.BatchNormalization(axis=3, epsilon=eps, momentum=BN_MOMENTUM, name=bn + "2b")(x)
    x = k.layers.Activation("relu")(x)
    x = k.layers.Conv2D(f3, (1, 1), strides=(1, 1), padding="valid", name=conv + "2c")(x)
    x = k.layers.BatchNormalization(axis=3, epsilon=eps, momentum=BN_MOMENTUM, name=bn + "2c")(x)
    x = k.layers.Add(name=f"res{stage}{block}_add")([x, shortcut])
    return k.layers.Activation("relu", name=f"res{stage}{block}_out")(x)


def _resnet(input_shape, classes, stages, stem_filters, preprocess, stem, name):
    if stem not in STEMS:
        raise ToolkitError(f"unknown ResNet stem {stem!r}; choose one of: {', '.join(STEMS)}")
    k = keras()
    eps = _BN_EPS[stem]
    x_in = k.Input(shape=input_shape, name="image")
    x = preprocessing_layer(preprocess)(x_in)
    x = k.layers.ZeroPadding2D((3, 3), name="conv1_pad")(x)
    x = k.layers.Conv2D(stem_filters, (7, 7), strides=(2, 2), name="conv1")(x)
    x = k.layers.BatchNormalization(axis=3, epsilon=eps, momentum=BN_MOMENTUM, name="bn_conv1")(x)
    x = k.layers.Activation("relu", name="conv1_relu")(x)
    if stem == "keras":
        x = k.layers.ZeroPadding2D((1, 1), name="pool1_pad")(x)
    x = k.layers.MaxPooling2D((3, 3), strides=(2, 2), name="pool1")(x)
    for stage, (blocks, filters) in enumerate(stages, start=2):
        stride = 1 if stage == 2 else 2
        x = convolutional_block(x, 3, filters, stage, "a", s=stride, eps=eps)
        for b in range(1, blocks):
            x = identity_block(x, 3, filters, stage, chr(ord("a") + b), eps=eps)
    # Global average pooling: the seed's 2x2 average pool + flatten at 64x64, for any input size.
    x = k.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    out = classifier(classes, f"fc{classes}")(x)
    return k.Model(inputs=x_in, outputs=out, name=name)


@register_model("resnet50", penultimate="avg_pool", head=("fc",), weights="imagenet")
def resnet50(input_shape=(64, 64, 3), classes: int = 6, preprocess: str = "scale", stem: str = "seed"):
    """ResNet50: stages of 3/4/6/3 bottleneck blocks, 2048-d pooled features (23.6M params at 64x64)."""
    return _resnet(input_shape, classes, RESNET50_STAGES, 64, preprocess, stem, "ResNet50")


@register_model("resnet_tiny", penultimate="avg_pool", head=("fc",), tiny=True)
def resnet_tiny(input_shape=(32, 32, 3), classes: int = 6, preprocess: str = "scale", stem: str = "seed"):
    """A ResNet from the same blocks with one block per stage and 1/8 of the filters, for tests."""
    return _resnet(input_shape, classes, TINY_STAGES, 8, preprocess, stem, "ResNetTiny")
