"""Model builders: the seed's parameter counts, layer names and ImageNet-weight compatibility."""

import numpy as np
import pytest

from toolkit.errors import ToolkitError
from toolkit.models import build_model, get_spec, list_models


def _counts(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable + frozen, trainable, frozen


def test_happy_model_has_the_seed_parameter_count():
    model = build_model("happy", 64, 2)
    assert model.count_params() == 37_633
    assert [layer.name for layer in model.layers if layer.weights] == ["conv0", "bn0", "fc"]
    assert model.output_shape == (None, 1)


def test_resnet50_matches_the_seed_summary():
    model = build_model("resnet50", 64, 6)
    assert _counts(model) == (23_600_006, 23_546_886, 53_120)
    assert model.get_layer("pool1").output_shape == (None, 15, 15, 64)
    assert model.get_layer("res2a_branch2a").output_shape[-1] == 64
    assert model.get_layer("bn5c_branch2c").output_shape[-1] == 2048
    assert model.get_layer(get_spec("resnet50").penultimate).output_shape == (None, 2048)
    assert model.output_shape == (None, 6)


def test_keras_stem_pads_before_the_pool_with_the_same_parameters():
    model = build_model("resnet50", 64, 6, stem="keras")
    assert model.get_layer("pool1").output_shape == (None, 16, 16, 64)
    assert model.count_params() == 23_600_006


@pytest.mark.parametrize("name", [m for m in list_models() if not get_spec(m).fetches])  # face: test_external_base
def test_every_model_takes_raw_pixels_and_predicts_probabilities(name):
    size = get_spec(name).default_input if not get_spec(name).tiny else 32
    for classes in (2, 3):
        model = build_model(name, size, classes)
        assert model.layers[1].name == "preprocess"
        x = np.random.default_rng(0).integers(0, 256, (2, size, size, 3)).astype("float32")
        p = model.predict(x, verbose=0)
        assert p.shape == (2, 1 if classes == 2 else classes)
        assert np.all((p >= 0) & (p <= 1))


def test_builder_errors_are_one_line():
    with pytest.raises(ToolkitError, match="unknown model 'vgg'"):
        build_model("vgg")
    with pytest.raises(ToolkitError, match="at least 2 classes"):
        build_model("happy", 64, 1)
    with pytest.raises(ToolkitError, match=r"\(height, width, 3\)"):
        build_model("happy", (64, 64, 1), 2)
