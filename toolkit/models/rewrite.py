"""Graph rewrites that make a converted ONNX file faster on onnxruntime's CPU kernels, same outputs.

Done once, when a model is converted (never per frame, never on the door): the rewritten file is written
beside its source, checked against it, and cached under its own key (:data:`REWRITE`, part of the record of
the converted models), so a change of rewrite converts again.

- ``PRelu(x, slope)`` -> ``Relu(x) + slope * Min(x, 0)``: onnxruntime 1.2x runs PRelu with a per-channel slope
  through a general broadcasting kernel; the four element-wise ops it becomes are vectorised. MediaPipe's palm
  detector has 31 PRelu nodes (more than half of its time); its outputs stay bit-identical (both forms compute
  the same products and one exact addition of a zero).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError

REWRITE = "prelu-relu-min-1"  # the cache key of the rewrite: bump when what it does changes
SUFFIX = ".relu.onnx"  # palm_detection_full.onnx -> palm_detection_full.relu.onnx
_ZERO = "toolkit_rewrite_zero"


def rewritten_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name.removesuffix(".onnx") + SUFFIX)


def rewrite_current(source: Path, record: dict) -> bool:
    """Does ``record`` (a converted-models record) hold this rewrite of ``source``, and is its file unchanged?"""
    from toolkit.inference.manifest import sha256_file

    target, done = rewritten_path(source), record.get("rewrite", {})
    return done.get("key") == REWRITE and target.is_file() and done.get("sha256") == sha256_file(target)


def record_rewrite(source: Path, record: dict, atol: float) -> tuple[Path, float]:
    """:func:`write_rewritten`, then note it in ``record`` (``rewrite`` and the new file's ``sha256``).

    Returns:
        (the new file, the largest |difference| of any output).
    """
    from toolkit.inference.manifest import sha256_file

    target, diff = write_rewritten(source, atol)
    record["rewrite"] = {"key": REWRITE, "file": target.name, "from": Path(source).name, "max_diff": diff,
                         "sha256": sha256_file(target)}  # fmt: skip
    record.setdefault("sha256", {})[target.name] = record["rewrite"]["sha256"]
    return target, diff


def rewrite_prelu(model):
    """A copy of an ``onnx.ModelProto`` with every PRelu node replaced (see the module docstring)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    nodes = []
    count = 0
    for node in graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        count += 1
        x, slope = node.input
        name = f"{node.name or node.output[0]}_rw"
        nodes += [helper.make_node("Relu", [x], [f"{name}_pos"], name=f"{name}_relu"),
                  helper.make_node("Min", [x, _ZERO], [f"{name}_neg"], name=f"{name}_min"),
                  helper.make_node("Mul", [f"{name}_neg", slope], [f"{name}_sneg"], name=f"{name}_mul"),
                  helper.make_node("Add", [f"{name}_pos", f"{name}_sneg"], list(node.output), name=f"{name}_add")]
    if count:
        graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), _ZERO))
        del graph.node[:]
        graph.node.extend(nodes)
    return model


def write_rewritten(source: Path, atol: float, seed: int = 0) -> tuple[Path, float]:
    """Write ``source`` rewritten to :func:`rewritten_path` and check it on random [0, 1] inputs.

    Returns:
        (the new file, the largest |difference| of any output).

    Raises:
        ToolkitError: the outputs differ by more than ``atol`` (nothing is kept).
    """
    import onnx
    import onnxruntime as ort

    source = Path(source)
    target = rewritten_path(source)
    model = rewrite_prelu(onnx.load(str(source)))
    tmp = target.with_name(target.name + ".tmp")
    onnx.save(model, str(tmp))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    before = ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
    spec = before.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in spec.shape]
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(3):
        x = {spec.name: rng.random(shape, dtype=np.float32)}
        for a, b in zip(before.run(None, x), after.run(None, x), strict=True):
            worst = max(worst, float(np.abs(np.asarray(a) - np.asarray(b)).max()))
    if worst > atol:
        tmp.unlink(missing_ok=True)
        raise ToolkitError(f"{source}: the rewritten graph differs by {worst:g} (> {atol:g}); report this as a bug")
    tmp.replace(target)
    return target, worst
