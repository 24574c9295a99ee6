"""TFLite export: TFLiteConverter on the tf_keras model, float32 / dynamic / float16 / int8 / QAT int8.

int8 may keep chosen Keras layers in float (``float_layers``): the model is calibrated once, then the MLIR
quantizer runs with those layers' ops on its deny list, so they stay float32 between a DEQUANTIZE and a
QUANTIZE. :func:`sensitivity` ranks layers by what quantizing each one alone costs at the model's output.
"""

from __future__ import annotations

import hashlib
import warnings
import weakref
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.export.config import one_line
from toolkit.native import quiet_native_stderr

# Calibration is the slow step (every image through the float graph with every activation recorded); a
# mixed-precision search converts the same model with a dozen deny lists, so its result is kept per model.
_CALIBRATED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def convert(model, quantization: str, calibration: np.ndarray | None = None, uint8_io: bool = False,
            float_layers: tuple = ()) -> bytes:
    """Convert a tf_keras model to a TFLite flatbuffer.

    Args:
        model: the float model (or the QAT model for ``qat``).
        quantization: none, dynamic (int8 weights, float activations), float16 (half weights),
            int8 (full integer, calibrated on ``calibration``) or qat (int8 from fake-quant ranges).
        calibration: float32 (N, H, W, 3) 0-255 images; int8 needs them, qat uses them for the I/O ranges.
        uint8_io: int8/qat only: uint8 input (raw pixels: scale 1, zero point 0) and uint8 output.
        float_layers: int8 only: Keras layer names whose TFLite ops stay float32 (every op a layer was fused
            into; see :func:`toolkit.export.tflite_layers.layer_ops`).

    Returns:
        the flatbuffer bytes.

    Raises:
        ToolkitError: no calibration images for int8, ``float_layers`` with another quantization or naming
            no layer of the model, or a failed conversion.
    """
    from toolkit._keras import tf

    tf = tf()
    if float_layers:
        if quantization != "int8":
            raise ToolkitError(f"float layers apply to int8 files only, not {quantization}")
        return _mixed(model, calibration, uint8_io, tuple(float_layers))
    converter = _converter(tf, model)
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization in ("int8", "qat"):
        _check_calibration(calibration)
        converter.representative_dataset = _representative(calibration)
        # Full integer: every op int8, so the file runs on integer-only paths (XNNPACK QS8, Pi NEON dot).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if uint8_io:
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
    return _run_converter(converter, quantization)


def _converter(tf, model):
    """A converter for the model's inference call, traced once and frozen.

    ``from_keras_model`` first writes the model as a SavedModel and reads it back, which is over 90 % of a
    conversion (ResNet50: 30.5 s against 9.2 s; HappyModel 1.4 s against 0.2 s) for the same flatbuffer: the
    outputs of both were identical for float and int8 files of both models. Tensor names differ
    (``image`` / ``Identity`` instead of ``serving_default_image:0`` / ``StatefulPartitionedCall:0``); nothing
    reads them (the ONNX made from a QAT file renames its input to ``image``). Mixed-precision int8 keeps
    ``from_keras_model`` (:func:`calibrated`): it maps ops back to Keras layers by the names that path gives.
    """
    if len(model.inputs) != 1:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    spec = tf.TensorSpec(model.inputs[0].shape, model.inputs[0].dtype, name=model.inputs[0].name.split(":")[0])
    call = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([call], model)
    converter.experimental_lower_to_saved_model = False
    return converter


def export(ctx, path: Path, quantization: str) -> None:
    """Write ``path``: the context's model converted with ``quantization``."""
    model = ctx.qat_model() if quantization == "qat" else ctx.model
    int8 = quantization in ("int8", "qat")
    data = convert(model, quantization, ctx.calibration if int8 else None, uint8_io=ctx.config.uint8_io and int8)
    Path(path).write_bytes(data)


def _check_calibration(calibration) -> None:
    if calibration is None or not len(calibration):
        raise ToolkitError("int8 TFLite export needs calibration images (--calibration N from the train split)")


def _representative(calibration: np.ndarray):
    """The converter's calibration feed, one image at a time, with its progress shown while it runs."""
    from toolkit.progress import progress

    def representative():
        with progress("calibrating int8 ranges (TFLite)", total=len(calibration)) as shown:
            for i in range(len(calibration)):
                yield [calibration[i : i + 1]]
                shown.advance(1)

    return representative


def _run_converter(converter, quantization: str) -> bytes:
    try:
        with warnings.catch_warnings():
            # Every quantizing conversion warns "Statistics for quantized inputs were expected": that is the
            # TF1 converter's quantized_input_stats, which the calibrated v2 path never uses. Noise here.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
            with quiet_native_stderr():  # the quantizer prints "fully_quantize: 0, inference_type: 6, ..." per call
                return converter.convert()
    except Exception as exc:  # the converter raises many types; the user needs the first line
        raise ToolkitError(f"TFLite conversion ({quantization}) failed: {one_line(exc)}") from exc


def calibrated(model, calibration: np.ndarray) -> bytes:
    """The float flatbuffer with int8 ranges recorded from ``calibration`` (cached per model and image set).

    It is what the converter's own int8 path quantizes (calibrate, then the MLIR quantizer), stopped before
    quantizing so that each caller can choose which ops stay float.
    """
    from toolkit._keras import tf

    tf = tf()
    _check_calibration(calibration)
    key = hashlib.sha256(np.ascontiguousarray(calibration, dtype=np.float32).tobytes()).hexdigest()
    per_model = _CALIBRATED.setdefault(model, {})
    if key not in per_model:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(calibration)
        # Float builtins too: a deny-listed op runs as the float kernel of the same builtin.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_mlir_quantizer = True
        converter._experimental_calibrate_only = True  # the documented QuantizationDebugger route
        per_model.clear()  # one image set per model at a time: the flatbuffer holds the model's weights
        per_model[key] = _run_converter(converter, "int8 calibration")
    return per_model[key]


def quantize_calibrated(calibrated_model: bytes, float_nodes: list[str], uint8_io: bool = False) -> bytes:
    """int8 from a calibrated flatbuffer, the ops whose output tensors are ``float_nodes`` left float32."""
    from tensorflow.lite.python import convert as lite_convert

    from toolkit._keras import tf
    from toolkit.native import quiet_native_stderr

    tf = tf()
    io = tf.uint8 if uint8_io else tf.float32
    try:
        with quiet_native_stderr():  # it prints "fully_quantize: 0, inference_type: 6, ..." on every call
            return lite_convert.mlir_quantize(calibrated_model, input_data_type=io, output_data_type=io,
                                              denylisted_nodes=list(float_nodes))
    except Exception as exc:
        raise ToolkitError(f"TFLite int8 quantization with float layers failed: {one_line(exc)}") from exc


EXACT_LAYERS = 12  # layers measured at the output; beyond this, the local-error screen picks which


def sensitivity(model, calibration: np.ndarray, images: np.ndarray, threads: int | None = None,
                exact: int = EXACT_LAYERS) -> dict[str, float]:
    """What quantizing each Keras layer alone costs: mean over ``images`` of the largest |Δp| against float.

    Measured, not estimated: the model is calibrated once, then per layer the MLIR quantizer turns only that
    layer's ops into int8 (every other op on its deny list) and ai-edge-litert runs the file. The quantizer
    rewrites the whole flatbuffer each time (~2-3 s for ResNet50's 94 MB, whatever the layer), so a model
    with more than ``exact`` layers is screened first: the all-int8 and the float file run once with every
    tensor kept, and each op's own error (relative RMS error at its output minus the worst at its inputs)
    picks the ``exact`` layers that are measured (the output layer always among them). An op's local error
    is only a screen: how far it travels to the output is what the gate judges.

    Args:
        model: the float tf_keras model.
        calibration: the int8 calibration images (float32 0-255, N x H x W x 3).
        images: held-out images to measure on (float32 0-255); a few dozen are enough to rank.
        threads: interpreter threads (default: every core).
        exact: how many layers at most are measured at the output.

    Returns:
        Keras layer name -> error, worst first: every layer with ops of its own on a small model, the screened
        ``exact`` on a large one (layers folded into another's op, e.g. BatchNormalization, never appear).
    """
    import tempfile

    from toolkit.export.tflite_layers import layer_ops, local_errors
    from toolkit.export.validate import TFLiteRunner, predict

    base = calibrated(model, calibration)
    ops = layer_ops(model, base)
    every = [op["node"] for op in ops]
    groups: dict[str, list[str]] = {}
    for op in ops:
        if op["layer"] is not None:
            groups.setdefault(op["layer"], []).append(op["node"])
    images = np.asarray(images, dtype=np.float32)
    floating = quantize_calibrated(base, every)  # the float graph itself: every op denied
    if len(groups) > exact:
        local = local_errors(floating, quantize_calibrated(base, []), images[:16], threads)
        worst = sorted(groups, key=lambda g: -max(local.get(n, 0.0) for n in groups[g]))
        # The layer that writes the output is always measured: its error reaches the probabilities unaveraged,
        # while a relative error on large logits looks small (ResNet50's fc6: last on the screen, first measured).
        last = [op["layer"] for op in ops if op["layer"] is not None][-1]
        chosen = [last] + [g for g in worst if g != last][: exact - 1]
        groups = {g: groups[g] for g in chosen}
    errors: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="toolkit-sensitivity-") as tmp:
        path = Path(tmp) / "one.tflite"
        path.write_bytes(floating)
        reference = predict(TFLiteRunner(path, threads), images)
        for layer, nodes in groups.items():
            keep = set(nodes)
            path.write_bytes(quantize_calibrated(base, [n for n in every if n not in keep]))
            probs = predict(TFLiteRunner(path, threads), images)
            errors[layer] = float(np.abs(probs - reference).max(axis=1).mean())
    return dict(sorted(errors.items(), key=lambda kv: -kv[1]))


def _mixed(model, calibration, uint8_io: bool, float_layers: tuple) -> bytes:
    from toolkit.export.tflite_layers import layer_ops

    ops = layer_ops(model, calibrated(model, calibration))
    named = {name for op in ops for name in op["layers"]}
    unknown = [n for n in float_layers if n not in named]
    if unknown:
        raise ToolkitError(f"float layers {unknown}: no TFLite op of the model comes from them (layers with ops: "
                           f"{', '.join(sorted(named)[:12])}{' ...' if len(named) > 12 else ''})")
    nodes = [op["node"] for op in ops if set(op["layers"]) & set(float_layers)]
    return quantize_calibrated(calibrated(model, calibration), nodes, uint8_io)
