"""Conversion-time graph rewrites (toolkit.models.rewrite) on a small real ONNX graph with PRelu."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from toolkit.models.rewrite import rewritten_path, write_rewritten


def prelu_model(path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    slope = rng.uniform(-0.5, 0.5, (4, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c", "slope"], ["y"])]
    graph = helper.make_graph(nodes, "prelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(slope, "slope")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_prelu_becomes_relu_plus_slope_times_min_with_the_same_outputs(tmp_path):
    source = prelu_model(tmp_path / "m.onnx")
    target, diff = write_rewritten(source, atol=1e-6)
    assert target == rewritten_path(source) == tmp_path / "m.relu.onnx" and diff == 0.0
    ops = [n.op_type for n in onnx.load(target).graph.node]
    assert "PRelu" not in ops and ops.count("Min") == 1 and ops.count("Relu") == 1
    x = {"x": np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)}  # negatives too
    a = ort.InferenceSession(str(source)).run(None, x)[0]
    b = ort.InferenceSession(str(target)).run(None, x)[0]
    assert (a < 0).any() and np.array_equal(a, b)
