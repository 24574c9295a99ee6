"""A ``.tflite`` file to ONNX with tf2onnx, kept only when it computes what the ``.tflite`` computes.

Used for MediaPipe's models (the face detector, the hand models): converted once on the training machine,
the door runs the ONNX with onnxruntime. The check runs both files (the ``.tflite`` with ai-edge-litert) on
noise and on smooth, photo-like images and compares every output: those given in input pixels (box and
keypoint regressors, landmarks) as fractions of the input size, as MediaPipe's decoders use them (their raw
values reach ~200 px, where float32 rounding alone is ~1e-5 px); the others (logits, scores, world
landmarks) relative above 1 (logits reach ~50).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError

OPSET = 17


def require_converter(what: str, instead: str = "") -> None:
    """Raise one line when tf2onnx or TensorFlow (the training extra) is not installed, before any download.

    Raises:
        ToolkitError: naming ``what`` needs them, the install command, and ``instead`` (what works without).
    """
    import importlib.util

    missing = [name for name in ("tensorflow", "tf2onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise ToolkitError(f"{what} needs {' and '.join(missing)} (pip install 'door-camera-toolkit[train]')"
                           + (f"; {instead}" if instead else ""))


def to_onnx(tflite: Path, onnx_path: Path, *, atol: float, value_range: tuple[float, float],
            pixel_outputs: tuple[str, ...] = (), opset: int = OPSET) -> float:  # fmt: skip
    """Convert into a temp file, check it with :func:`compare_outputs`, then move it to ``onnx_path``.

    Returns:
        The largest difference found.

    Raises:
        ToolkitError: tf2onnx fails, or the ONNX differs by more than ``atol`` (nothing is kept).
    """
    tmp = onnx_path.with_name(f".tmp-{os.getpid()}-{onnx_path.name}")
    try:
        try:
            _tf2onnx_from_tflite(tflite, tmp, opset)
        except Exception as exc:  # tf2onnx raises many kinds
            raise ToolkitError(f"{tflite}: tf2onnx cannot convert it ({str(exc).splitlines()[0][:200]})") from exc
        diff = compare_outputs(tflite, tmp, value_range=value_range, pixel_outputs=pixel_outputs)
        if diff > atol:
            raise ToolkitError(f"{tflite.name}: its ONNX differs from it by {diff:.2e} (> {atol}); not kept")
        os.replace(tmp, onnx_path)
    finally:
        tmp.unlink(missing_ok=True)
    return diff


def _tf2onnx_from_tflite(tflite: Path, out: Path, opset: int) -> None:
    """tf2onnx's ``from_tflite``, with TensorFlow imported through :mod:`toolkit._keras` and quietly.

    tf2onnx imports TensorFlow itself: imported first, it would leave TensorFlow without the Keras 2 setting and
    the training that follows in the same process (a first ``finetune hands``) would stop. It also reads tensor
    shapes with ``tf.lite.Interpreter``, which warns that it is deprecated on every call: ai-edge-litert's
    interpreter (the same API) stands in for it during the conversion.
    """
    from unittest import mock

    from ai_edge_litert.interpreter import Interpreter

    from toolkit._keras import tf
    from toolkit.native import quiet_native_stderr

    tf()
    import tf2onnx
    from tf2onnx import tflite_utils

    # the native interpreter prints "Created TensorFlow Lite XNNPACK delegate" per file: silence it
    with mock.patch.object(tflite_utils.tf.lite, "Interpreter", Interpreter), quiet_native_stderr():
        tf2onnx.convert.from_tflite(str(tflite), opset=opset, output_path=str(out))


def compare_outputs(tflite: Path, onnx_path: Path, *, value_range: tuple[float, float],
                    pixel_outputs: tuple[str, ...] = (), n: int = 8, seed: int = 0) -> float:  # fmt: skip
    """Max |ONNX - tflite| over every output: ``pixel_outputs`` (names) / the input size, others / max(1, |tflite|).

    Args:
        value_range: the model's input range, e.g. (0, 1) or (-1, 1).

    Raises:
        ToolkitError: an output of the ``.tflite`` is missing from the ONNX or has another shape.
    """
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    from toolkit.native import quiet_native_stderr

    with quiet_native_stderr():  # "Created TensorFlow Lite XNNPACK delegate", once per file
        interp = Interpreter(model_path=str(tflite))
        interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    size = int(detail["shape"][1])
    low, high = value_range
    rng = np.random.default_rng(seed)
    inputs = [rng.uniform(low, high, (1, size, size, 3)).astype(np.float32) for _ in range(n // 2)]
    for _ in range(n - n // 2):
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        smooth = np.asarray(small.resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255
        inputs.append((low + smooth * (high - low))[None].astype(np.float32))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    diff = 0.0
    for x in inputs:
        interp.set_tensor(detail["index"], x)
        interp.invoke()
        got = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))
        for d in interp.get_output_details():
            want, other = interp.get_tensor(d["index"]), got.get(d["name"])
            if other is None or other.shape != want.shape:
                raise ToolkitError(f"{onnx_path.name}: output {d['name']!r} missing or not of {tflite.name}'s shape")
            scale = size if d["name"] in pixel_outputs else np.maximum(1.0, np.abs(want))
            diff = max(diff, float(np.max(np.abs(other - want) / scale)))
    return diff
