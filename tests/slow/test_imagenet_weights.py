"""ImageNet-weight compatibility: Keras Applications' ResNet50 weights reproduce its outputs."""

import numpy as np
import pytest

from toolkit._keras import keras
from toolkit.models import build_model
from toolkit.models.weights import load_resnet50_weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference():
    k = keras()
    k.utils.set_random_seed(1)
    ref = k.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=1000)
    # Random BN statistics, so a mismatched epsilon or a swapped layer would show in the outputs.
    for layer in ref.layers:
        if isinstance(layer, k.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            rng = np.random.default_rng(len(layer.name))
            layer.set_weights([g * rng.uniform(0.5, 1.5, g.shape), b + rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 2.0, v.shape)])
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    return ref, x


def test_copied_weights_give_identical_outputs(reference):
    ref, x = reference
    ours = build_model("resnet50", 64, 1000, stem="keras", preprocess="none")
    assert load_resnet50_weights(ours, ref) == sum(1 for layer in ours.layers if layer.weights)
    np.testing.assert_allclose(ours.predict(x, verbose=0), ref.predict(x, verbose=0), rtol=1e-4, atol=1e-6)


def test_weight_file_loads_by_name_with_rgb_preprocessing_inside(reference, tmp_path):
    ref, x = reference
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    ref.save_weights(str(path))  # the same layout as the official ImageNet files
    ours = build_model("resnet50", 64, 1000, stem="keras", preprocess="imagenet")
    load_resnet50_weights(ours, path)
    # Keras' caffe preprocessing: RGB -> BGR, minus the ImageNet mean; ours does it inside the model.
    expected = ref.predict(keras().applications.resnet50.preprocess_input(x.copy()), verbose=0)
    np.testing.assert_allclose(ours.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-6)


def test_new_head_keeps_pretrained_body(reference, tmp_path):
    ref, _ = reference
    path = tmp_path / "w.h5"
    ref.save_weights(str(path))
    ours = build_model("resnet50", 64, 15, preprocess="imagenet")  # the seed's stem, 15 classes
    load_resnet50_weights(ours, path)
    np.testing.assert_array_equal(ours.get_layer("res3a_branch1").get_weights()[0],
                                  ref.get_layer("conv3_block1_0_conv").get_weights()[0])
    np.testing.assert_array_equal(ours.get_layer("conv1").get_weights()[0],
                                  ref.get_layer("conv1_conv").get_weights()[0][:, :, ::-1, :])
    assert ours.get_layer("fc15").get_weights()[0].shape == (2048, 15)
