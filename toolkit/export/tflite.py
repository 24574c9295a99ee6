"""TFLite export: TFLiteConverter on the tf_keras model, float32 / dynamic / float16 / int8 / QAT int8."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.export.config import one_line


def convert(model, quantization: str, calibration: np.ndarray | None = None, uint8_io: bool = False) -> bytes:
    """Convert a tf_keras model to a TFLite flatbuffer.

    Args:
        model: the float model (or the QAT model for ``qat``).
        quantization: none, dynamic (int8 weights, float activations), float16 (half weights),
            int8 (full integer, calibrated on ``calibration``) or qat (int8 from fake-quant ranges).
        calibration: float32 (N, H, W, 3) 0-255 images; int8 needs them, qat uses them for the I/O ranges.
        uint8_io: int8/qat only: uint8 input (raw pixels: scale 1, zero point 0) and uint8 output.

    Returns:
        the flatbuffer bytes.
    """
    from toolkit._keras import tf

    tf = tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization in ("int8", "qat"):
        if calibration is None or not len(calibration):
            raise ToolkitError("int8 TFLite export needs calibration images (--calibration N from the train split)")

        def representative():
            for i in range(len(calibration)):
                yield [calibration[i : i + 1]]

        converter.representative_dataset = representative
        # Full integer: every op int8, so the file runs on integer-only paths (XNNPACK QS8, Pi NEON dot).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if uint8_io:
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
    try:
        with warnings.catch_warnings():
            # Every quantizing conversion warns "Statistics for quantized inputs were expected": that is the
            # TF1 converter's quantized_input_stats, which the calibrated v2 path never uses. Noise here.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
            return converter.convert()
    except Exception as exc:  # the converter raises many types; the user needs the first line
        raise ToolkitError(f"TFLite conversion ({quantization}) failed: {one_line(exc)}") from exc


def export(ctx, path: Path, quantization: str) -> None:
    """Write ``path``: the context's model converted with ``quantization``."""
    model = ctx.qat_model() if quantization == "qat" else ctx.model
    int8 = quantization in ("int8", "qat")
    data = convert(model, quantization, ctx.calibration if int8 else None, uint8_io=ctx.config.uint8_io and int8)
    Path(path).write_bytes(data)
