"""The head every adaptable chain ends in, as one small ONNX file: ``features`` -> standardiser -> linear -> probs.

``head.onnx``: ``features`` [N, D] -> Sub(mean) -> Mul(inv_std = 1 / sqrt(var + eps)) -> MatMul(coef [D, K]) ->
Add(intercept [K]) -> Sigmoid (K = 1: P(labels[1])) or Softmax (K = labels) -> ``probs`` [N, K]. The standardiser
and the linear layer stay separate, under these initializer names, so a reader (or a refit on the door) finds the
training features' mean and spread and the coefficients as they were fitted. Written by the face-landmark export
(:mod:`toolkit.export.facechain`) and by the export of heads trained on a frozen base's cached features
(:mod:`toolkit.export.featurechain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURE_INPUT = "features"  # the head's input name, as every chain reader looks it up
HEAD_FILE = "head.onnx"
INITIALIZERS = {"mean": "mean", "inv_std": "inv_std (1 / sqrt(var + eps))", "coef": "coef", "intercept": "intercept"}


@dataclass(frozen=True)
class HeadFile:
    """The unfolded head: z = (x - mean) / sqrt(var + eps); logits = z @ coef + intercept; sigmoid or softmax."""

    mean: np.ndarray  # (D,)
    var: np.ndarray  # (D,)
    eps: float
    coef: np.ndarray  # (D, K): K = 1 for a sigmoid head (P(labels[1])), else one column per label
    intercept: np.ndarray  # (K,)

    @property
    def sigmoid(self) -> bool:
        return self.coef.shape[1] == 1

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, K) probabilities in float64: what ``head.onnx`` computes in float32."""
        z = (np.asarray(x, np.float64) - self.mean) / np.sqrt(np.asarray(self.var, np.float64) + self.eps)
        logits = z @ np.asarray(self.coef, np.float64) + np.asarray(self.intercept, np.float64)
        if self.sigmoid:
            return 1.0 / (1.0 + np.exp(-logits))
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def write_head_onnx(head: HeadFile, path: Path, opset: int = 17, metadata: dict | None = None,
                    name: str = "head") -> Path:
    """Write ``head`` as the ONNX graph the module docstring describes; checked by onnx.checker."""
    from onnx import TensorProto, helper

    from toolkit.export.onnx import save_checked

    mean = np.asarray(head.mean, np.float32).reshape(-1)
    inv = (1.0 / np.sqrt(np.asarray(head.var, np.float64).reshape(-1) + head.eps)).astype(np.float32)
    coef = np.asarray(head.coef, np.float32).reshape(len(mean), -1)
    bias = np.asarray(head.intercept, np.float32).reshape(-1)
    t = lambda key, a: helper.make_tensor(key, TensorProto.FLOAT, a.shape, a.ravel())  # noqa: E731
    act = "Sigmoid" if coef.shape[1] == 1 else "Softmax"
    nodes = [helper.make_node("Sub", [FEATURE_INPUT, "mean"], ["centred"]),
             helper.make_node("Mul", ["centred", "inv_std"], ["z"]),
             helper.make_node("MatMul", ["z", "coef"], ["logit0"]),
             helper.make_node("Add", ["logit0", "intercept"], ["logit"]),
             helper.make_node(act, ["logit"], ["probs"], **({"axis": -1} if act == "Softmax" else {}))]  # fmt: skip
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info(FEATURE_INPUT, TensorProto.FLOAT, ["N", len(mean)])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", coef.shape[1]])],
        [t("mean", mean), t("inv_std", inv), t("coef", coef), t("intercept", bias)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="toolkit")
    save_checked(proto, path, metadata)
    return Path(path)


def fold_keras_head(layers: list) -> tuple[HeadFile | None, str]:
    """The Keras layers after a feature cut as one :class:`HeadFile`, or (None, why not).

    Linear at inference: Dropout and Flatten (of 2-D features) pass through, one BatchNormalization is the
    standardiser (its scale and shift go into the coefficients), and the last layer is one Dense with a sigmoid
    (one unit) or softmax. Anything else (a hidden layer with a nonlinearity) cannot be refitted as a linear head.
    """
    norm, dense = None, None
    for i, layer in enumerate(layers):
        kind = type(layer).__name__
        if kind == "Dropout" or (kind == "Flatten" and len(layer.output_shape) == 2 == len(layer.input_shape)):
            continue
        if kind == "BatchNormalization" and norm is None and dense is None and _last_axis(layer):
            norm = layer
            continue
        if kind == "Dense" and i == len(layers) - 1:
            dense = layer
            continue
        return None, f"its head has a {kind} layer {layer.name!r}, not only a standardiser and a linear layer"
    if dense is None:
        return None, "its head ends without a Dense layer"
    act = getattr(dense.activation, "__name__", str(dense.activation))
    kernel = np.asarray(dense.kernel.numpy(), np.float64)
    units = kernel.shape[1]
    if not ((units == 1 and act == "sigmoid") or (units > 1 and act == "softmax")):
        return None, f"its last layer {dense.name!r} has {units} unit(s), activation {act!r}: not sigmoid/softmax"
    bias = np.asarray(dense.bias.numpy(), np.float64) if dense.use_bias else np.zeros(units)
    d = kernel.shape[0]
    if norm is None:  # no standardiser: the identity (mean 0, spread 1)
        return HeadFile(np.zeros(d), np.ones(d), 0.0, kernel, bias), ""
    gamma = np.asarray(norm.gamma.numpy(), np.float64) if norm.scale else np.ones(d)
    beta = np.asarray(norm.beta.numpy(), np.float64) if norm.center else np.zeros(d)
    mean = np.asarray(norm.moving_mean.numpy(), np.float64)
    var = np.asarray(norm.moving_variance.numpy(), np.float64)
    # (z * gamma + beta) @ W + b == z @ (gamma W) + (beta @ W + b): the standardiser itself stays as fitted
    return HeadFile(mean, var, float(norm.epsilon), kernel * gamma[:, None], beta @ kernel + bias), ""


def _last_axis(layer) -> bool:
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return len(layer.input_shape) == 2 and list(axis) in ([-1], [1])


def head_record(head: HeadFile, **extra) -> dict:
    """What a manifest says of ``head.onnx``: its width, eps and where the standardiser and the linear layer are."""
    return {"features": int(len(np.ravel(head.mean))), "outputs": int(head.coef.shape[1]), "eps": float(head.eps),
            "initializers": dict(INITIALIZERS), **extra}
