"""Opening an export's ONNX files and checking them against the manifest before the first image (one line each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from toolkit.errors import ToolkitError
from toolkit.inference.handpipe import FEATURE_INPUT
from toolkit.inference.manifest import Manifest

_ORT_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}


def check_head_session(session: ort.InferenceSession, manifest: Manifest, path: Path, where: Path,
                        dim: int | None = None) -> str:
    """A head on features: one float input ``features`` [N, dim], one float output [N, 1 or labels]."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != FEATURE_INPUT or inputs[0].type != "tensor(float)":
        raise ToolkitError(f"{path}: the head must take one float tensor {FEATURE_INPUT!r}, got "
                           f"{[(i.name, i.type) for i in inputs]} ({where})")
    width_in = inputs[0].shape[-1] if inputs[0].shape else None
    if dim is not None and isinstance(width_in, int) and width_in != dim:
        raise ToolkitError(f"{path}: the head reads {width_in} features, hands.features in {where} says {dim}; "
                           "re-run 'toolkit export'")
    width = 1 if manifest.output_kind == "sigmoid" else len(manifest.labels)
    out = outputs[0] if len(outputs) == 1 else None
    if out is None or out.type != "tensor(float)" or len(out.shape) != 2 or (
            isinstance(out.shape[1], int) and out.shape[1] != width):
        raise ToolkitError(f"{path}: the head must return float [N, {width}] ({where})")
    return out.name


def only_onnx(manifest: Manifest, where: Path) -> str:
    onnx_files = [name for name, e in manifest.files.items() if e.format == "onnx"]
    if len(onnx_files) != 1:
        raise ToolkitError(f"{where}: field 'serve' is empty and there are {len(onnx_files)} ONNX files; pass --file")
    return onnx_files[0]


def open_session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1  # the door's graphs are sequential; extra pools only cost memory
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
        raise ToolkitError(
            f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0]}); re-run 'toolkit export'"
        ) from exc


def check_session(session: ort.InferenceSession, manifest: Manifest, dtype: np.dtype, path: Path, where: Path):
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != manifest.input.name:
        raise ToolkitError(
            f"{path}: inputs {[i.name for i in inputs]} do not match input.name {manifest.input.name!r} in {where}"
        )
    inp = inputs[0]
    if inp.type != _ORT_TYPES.get(dtype.name):
        raise ToolkitError(f"{path}: input type {inp.type} does not match input.dtype {dtype.name!r} in {where}")
    expected = [None, *manifest.input.size, 3]
    dims = zip(inp.shape[1:], expected[1:], strict=False)
    if len(inp.shape) != 4 or any(isinstance(a, int) and a != b for a, b in dims):
        raise ToolkitError(f"{path}: input shape {inp.shape} does not match input.shape {expected} in {where}")
    if len(outputs) != 1:
        raise ToolkitError(f"{path}: has {len(outputs)} outputs; the runtime expects one probability tensor")
    out = outputs[0]
    width = 1 if manifest.output_kind == "sigmoid" else len(manifest.labels)
    if out.type != "tensor(float)" or len(out.shape) != 2 or (isinstance(out.shape[1], int) and out.shape[1] != width):
        raise ToolkitError(
            f"{path}: output {out.name!r} {out.type} {out.shape} does not match output_kind "
            f"{manifest.output_kind!r} with {len(manifest.labels)} labels "
            f"(expected float [N, {width}]) in {where}"
        )
    return inp.name, out.name
