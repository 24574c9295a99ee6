"""A tiny ``features`` export for the adapt tests (onnx helper API, no TensorFlow).

base.onnx: image [N, 64, 64, 3] -> features [N, 3] = per-channel mean / 64 (about 0..4).
head.onnx: features -> sigmoid(x @ kernel + bias) (or softmax for several columns), written like the hand
export's head (``features`` in, ``probs`` out).

The shipped head opens on red (kernel (+2, -2, 0), bias 0). The "new camera" adds a red cast: its no_smile
photos are red-ish too, so the shipped head accepts them, and a head refitted on that camera's photos does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

from toolkit.inference.manifest import FileEntry, InputSpec, Manifest, sha256_file

SIZE = 64


def _save(path: Path, nodes, inits, inputs, outputs) -> Path:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="toolkit-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def build_base(path: Path) -> Path:
    nodes = [helper.make_node("ReduceMean", ["image"], ["means"], axes=[1, 2], keepdims=0),
             helper.make_node("Div", ["means", "scale"], ["features"])]
    inits = [helper.make_tensor("scale", TensorProto.FLOAT, [], [64.0])]
    return _save(path, nodes, inits, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
                 [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3])])


def build_head(path: Path, kernel: np.ndarray, bias: np.ndarray) -> Path:
    kernel, bias = np.asarray(kernel, np.float32), np.asarray(bias, np.float32).reshape(-1)
    act = "Sigmoid" if kernel.shape[1] == 1 else "Softmax"
    nodes = [helper.make_node("MatMul", ["features", "kernel"], ["l0"]), helper.make_node("Add", ["l0", "bias"], ["l"]),
             helper.make_node(act, ["l"], ["probs"], **({"axis": -1} if act == "Softmax" else {}))]
    inits = [helper.make_tensor("kernel", TensorProto.FLOAT, kernel.shape, kernel.ravel()),
             helper.make_tensor("bias", TensorProto.FLOAT, bias.shape, bias.ravel())]
    inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", kernel.shape[0]])]
    return _save(path, nodes, inits, inputs,
                 [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", kernel.shape[1]])])


def make_chain_export(folder: Path, kernel=((2.0,), (-2.0,), (0.0,)), bias=(0.0,), labels=("no_smile", "smile"),
                      threshold: float | None = 0.5, target_far: float = 0.05) -> Path:
    """An export folder of pipeline "features": base.onnx + head.onnx + manifest.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base, head = build_base(folder / "base.onnx"), build_head(folder / "head.onnx", np.array(kernel), np.array(bias))
    sigmoid = np.asarray(kernel).shape[1] == 1
    entry = FileEntry(format="onnx", quantization="none", sha256=sha256_file(head), bytes=head.stat().st_size,
                      threshold=threshold if sigmoid else None, far=0.01 if sigmoid else None)
    Manifest(name="chain", model="tiny", labels=tuple(labels), input=InputSpec(shape=(None, SIZE, SIZE, 3)),
             output_kind="sigmoid" if sigmoid else "softmax", files={"head.onnx": entry}, serve="head.onnx",
             target_far=target_far, pipeline="features",
             chain={"base": "base.onnx", "sha256": sha256_file(base), "output": "features"}).write(folder)
    return folder


def camera_photo(label: int, rng: np.random.Generator, cast: float = 0.0, classes: int = 2) -> np.ndarray:
    """A 64x64 photo of class ``label``: class 1 is red, class 0 green (classes 2+: blue shades); ``cast`` adds red."""
    rgb = np.array([60.0, 60.0, 60.0])
    if label == 1:
        rgb[0] += 60
    elif label == 0:
        rgb[1] += 60
    else:
        rgb[2] += 40 * label
    rgb = rgb + rng.normal(0, 12, 3) + np.array([cast, 0.0, 0.0])
    img = np.clip(rgb[None, None, :] + rng.normal(0, 5, (SIZE, SIZE, 3)), 0, 255)
    return img.astype(np.uint8)


def write_labelled(folder: Path, labels, per_class: int, cast: float = 0.0, seed: int = 0) -> Path:
    """``folder/<label>/*.png`` photos of the "new camera" (``cast``), ``per_class`` of each label."""
    rng = np.random.default_rng(seed)
    for i, lab in enumerate(labels):
        (Path(folder) / lab).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            Image.fromarray(camera_photo(i, rng, cast, len(labels))).save(Path(folder) / lab / f"snap-{j:03d}.png")
    return Path(folder)
