"""A base's own preprocessing as one affine map per pixel: read off keras.applications, or named for a file."""

import numpy as np
import pytest

from toolkit.errors import ToolkitError
from toolkit.models.external import affine, probe_preprocessing


@pytest.mark.parametrize("app", ["ResNet50", "MobileNetV2", "DenseNet121", "MobileNetV3Small"])
def test_probed_map_reproduces_the_applications_preprocess_input(app):
    import sys

    from toolkit._keras import keras

    fn = getattr(keras().applications, app)
    matrix, bias = probe_preprocessing(fn, app)
    x = np.random.default_rng(1).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    want = sys.modules[fn.__module__].preprocess_input(x.copy())
    np.testing.assert_allclose(x @ matrix + bias, want, atol=1e-3)


def test_caffe_mode_is_a_channel_flip_and_gray_is_luma_then_scaled():
    from toolkit._keras import keras

    matrix, _ = probe_preprocessing(keras().applications.ResNet50, "ResNet50")
    np.testing.assert_allclose(matrix, np.eye(3)[::-1], atol=1e-6)  # RGB in, BGR out
    gray, bias = affine("symmetric", 1)
    assert gray.shape == (3, 1) and bias.tolist() == [-1.0]
    np.testing.assert_allclose(np.array([255, 255, 255.0]) @ gray + bias, [1.0], atol=1e-5)
    caffe = probe_preprocessing(keras().applications.ResNet50, "ResNet50")
    for got, want in zip(affine("imagenet", 3), caffe, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-3)
    with pytest.raises(ToolkitError, match="--preprocess imagenet"):
        affine("imagenet", 1)
