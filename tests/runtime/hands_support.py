"""Hand models for tests: tiny fakes of MediaPipe's two ONNX files (onnx helper API), and the real ones if present.

The fake palm detector sees one palm when the input is bright on average: logit[PALM_ANCHOR] =
20 * mean(input in [0, 1]) - 5, every other anchor -20; its regressors are constant (a PALM_PX square on
the anchor, wrist keypoint PALM_PX/2 below the centre, middle-finger keypoint PALM_PX/2 above: an upright
hand). The fake landmark model returns the constant LANDMARKS (crop pixels), presence = mean(input) and
P(left) = LEFT.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

PALM_ANCHOR = 1152 + (6 * 12 + 6) * 6  # the first stride-16 anchor of cell (6, 6): centre (6.5/12, 6.5/12)
PALM_PX = 40.0  # palm box side, in the detector's 192 px
LEFT = 0.8
LANDMARKS = np.stack([np.linspace(20, 200, 21), np.linspace(200, 30, 21), np.linspace(-5, 5, 21)], 1).astype(
    np.float32)  # fmt: skip
WHEEL_NAME = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_ENV = "TOOLKIT_MEDIAPIPE_WHEEL"  # the path of that wheel, for tests that need the real models


def _save(nodes, inits, name, size, outputs, path):
    tensors = [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.ravel()) for n, a in inits.items()]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, size, size, 3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def build_fake_hand_models(folder) -> tuple[Path, Path]:
    """(palm, landmark) fake ONNX files in ``folder``, shaped like MediaPipe's (see the module docstring)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    w = np.zeros((1, 2016, 1), np.float32)
    b = np.full((1, 2016, 1), -20.0, np.float32)
    w[0, PALM_ANCHOR, 0], b[0, PALM_ANCHOR, 0] = 20.0, -5.0
    reg = np.zeros((1, 2016, 18), np.float32)
    reg[0, PALM_ANCHOR, 2:4] = PALM_PX
    reg[0, PALM_ANCHOR, 4:] = np.tile([0.0, 0.0], 7)
    reg[0, PALM_ANCHOR, 5] = PALM_PX / 2  # keypoint 0 (wrist) below the centre
    reg[0, PALM_ANCHOR, 9] = -PALM_PX / 2  # keypoint 2 (middle finger) above it
    nodes = [helper.make_node("ReduceMean", ["input_1"], ["mean"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Mul", ["mean", "w"], ["s"]), helper.make_node("Add", ["s", "b"], ["Identity_1"]),
             helper.make_node("Mul", ["mean", "zero"], ["z"]), helper.make_node("Add", ["z", "reg"], ["Identity"])]
    inits = {"w": w, "b": b, "reg": reg, "zero": np.zeros((1, 2016, 18), np.float32)}
    palm = _save(nodes, inits, "fake_palm", 192, [("Identity", [1, 2016, 18]), ("Identity_1", [1, 2016, 1])],
                 folder / "palm_detection_full.onnx")
    consts = {"marks": LANDMARKS.reshape(1, 63), "left": np.full((1, 1), LEFT, np.float32),
              "world": np.zeros((1, 63), np.float32), "zero63": np.zeros((1, 63), np.float32),
              "zero1": np.zeros((1, 1), np.float32)}  # fmt: skip
    nodes = [helper.make_node("ReduceMean", ["input_1"], ["m2"], axes=[2, 3], keepdims=0),
             helper.make_node("ReduceMean", ["m2"], ["Identity_1"], axes=[1], keepdims=1),  # presence: (1, 1)
             helper.make_node("Mul", ["Identity_1", "zero63"], ["z63"]),
             helper.make_node("Add", ["z63", "marks"], ["Identity"]),
             helper.make_node("Mul", ["Identity_1", "zero1"], ["z1"]),
             helper.make_node("Add", ["z1", "left"], ["Identity_2"]),
             helper.make_node("Add", ["z63", "world"], ["Identity_3"])]  # fmt: skip
    landmark = _save(nodes, consts, "fake_landmark", 224, [("Identity", [1, 63]), ("Identity_1", [1, 1]),
                     ("Identity_2", [1, 1]), ("Identity_3", [1, 63])], folder / "hand_landmark_full.onnx")  # fmt: skip
    return palm, landmark


def real_hand_models() -> tuple[Path, Path] | None:
    """(palm, landmark): MediaPipe's real hand models as ONNX, or None. From the weights cache (a TF-free venv
    can use them), else converted once from the wheel named by $TOOLKIT_MEDIAPIPE_WHEEL or lying in the weights
    cache (needs tf2onnx). Never the network."""
    from toolkit.inference.cache import weights_root

    folder = weights_root() / "mediapipe-0.10.21"
    palm, landmark = folder / "palm_detection_full.onnx", folder / "hand_landmark_full.onnx"
    fast = folder / "palm_detection_full.relu.onnx"  # what conversion now gives the door (toolkit.models.rewrite)
    if fast.is_file() and landmark.is_file():
        return fast, landmark
    if palm.is_file() and landmark.is_file():
        return palm, landmark
    models = convert_from_wheel("toolkit.models.hands", "ensure_hand_models")
    return None if models is None else (models.palm, models.landmark)


def convert_from_wheel(module: str, ensure: str):
    """``module.ensure(wheel)`` on the mediapipe wheel ($TOOLKIT_MEDIAPIPE_WHEEL, else the weights cache's), or
    None when there is no wheel or no tf2onnx to convert with (the tests that need the models skip)."""
    import importlib

    from toolkit.inference.cache import weights_root

    wheel = Path(os.environ.get(WHEEL_ENV) or weights_root() / WHEEL_NAME)
    if not wheel.is_file():
        return None
    try:
        import tf2onnx  # noqa: F401

        fn = getattr(importlib.import_module(module), ensure)
    except ImportError:
        return None
    return fn(str(wheel))
