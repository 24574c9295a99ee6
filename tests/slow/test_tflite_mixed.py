"""TFLite int8 with Keras layers kept in float, and the per-layer sensitivity, on a tiny two-conv model."""

from pathlib import Path

import numpy as np
import pytest

from toolkit.errors import ToolkitError
from toolkit.export import tflite, tflite_layers
from toolkit.export.validate import TFLiteRunner, predict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny():
    """conv_a -> relu -> conv_b -> pool -> dense 'head' on 16x16; returns (model, calibration, images)."""
    from toolkit._keras import keras

    k = keras()
    k.utils.set_random_seed(0)
    x = inp = k.Input((16, 16, 3), name="image")
    x = k.layers.Rescaling(1 / 255.0, name="scale")(x)
    x = k.layers.Conv2D(8, 3, name="conv_a")(x)
    x = k.layers.ReLU(name="relu_a")(x)
    x = k.layers.Conv2D(8, 3, name="conv_b")(x)
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    out = k.layers.Dense(3, activation="softmax", name="head")(x)
    model = k.Model(inp, out, name="tiny")
    rng = np.random.default_rng(0)
    calibration = rng.uniform(0, 255, (16, 16, 16, 3)).astype(np.float32)
    images = rng.uniform(0, 255, (12, 16, 16, 3)).astype(np.float32)
    return model, calibration, images


def _run(data: bytes, images, tmp_path: Path, name: str):
    path = tmp_path / name
    path.write_bytes(data)
    return predict(TFLiteRunner(path, threads=1), images)


def test_float_layers_leave_exactly_their_ops_float(tiny, tmp_path):
    model, calibration, images = tiny
    mixed = tflite.convert(model, "int8", calibration, float_layers=("conv_b",))
    # nothing denied: full integer, every compute op int8 (the same file as the plain int8 conversion)
    assert tflite_layers.float_ops(tflite.quantize_calibrated(tflite.calibrated(model, calibration), [])) == []
    floats = tflite_layers.float_ops(mixed)
    assert floats and all(tflite_layers.named_layers(n, {"conv_b"}) == ["conv_b"] for n in floats), floats
    ops = {op["layer"]: op for op in tflite_layers.layer_ops(model, mixed)}
    assert ops["conv_a"]["node"] not in floats and ops["head"]["node"] not in floats
    reference = model.predict(images, verbose=0)
    assert np.abs(_run(mixed, images, tmp_path, "m.tflite") - reference).max() < 0.15
    from ai_edge_litert.interpreter import Interpreter

    raw = Interpreter(model_content=tflite.convert(model, "int8", calibration, uint8_io=True, float_layers=("head",)))
    assert raw.get_input_details()[0]["dtype"] == np.uint8 and raw.get_output_details()[0]["dtype"] == np.uint8
    everything = tflite.convert(model, "int8", calibration, float_layers=("conv_a", "relu_a", "conv_b", "pool",
                                                                          "head"))
    # all layers float: the file computes what the float model does (only the input is never quantized)
    assert np.abs(_run(everything, images, tmp_path, "f.tflite") - reference).max() < 1e-4


def test_float_layers_must_name_layers_with_ops_and_apply_to_int8_only(tiny):
    model, calibration, _ = tiny
    with pytest.raises(ToolkitError, match=r"float layers \['nope'\]: no TFLite op of the model comes from them"):
        tflite.convert(model, "int8", calibration, float_layers=("nope",))
    with pytest.raises(ToolkitError, match="float layers apply to int8 files only, not float16"):
        tflite.convert(model, "float16", float_layers=("conv_a",))


def test_sensitivity_is_keyed_by_keras_layers_worst_first(tiny):
    model, calibration, images = tiny
    errors = tflite.sensitivity(model, calibration, images, threads=1)
    names = {layer.name for layer in model.layers}
    assert {"conv_a", "conv_b", "head"} <= set(errors) <= names, errors
    values = list(errors.values())
    assert values == sorted(values, reverse=True) and all(v >= 0 for v in values)
    assert max(values) > 0  # quantizing some layer changes the output at all
    screened = tflite.sensitivity(model, calibration, images, threads=1, exact=2)
    # a large model: only the layers with the worst local error are measured, with the same figures
    assert len(screened) == 2 and all(errors[k] == pytest.approx(v) for k, v in screened.items())


def test_tensor_names_match_whole_layer_names_only():
    layers = {"conv2d_1", "conv2d_10", "bn", "model"}
    assert tflite_layers.named_layers("m/conv2d_10/Relu;m/bn/FusedBatchNormV3;m/conv2d_10/Conv2D1", layers) == [
        "conv2d_10", "bn"]
    assert tflite_layers.named_layers("StatefulPartitionedCall:0", layers) == []
