"""KServe v2 / Open Inference Protocol tensors: parse and check requests, encode responses.

Supports JSON tensor data and Triton's binary tensor extension (``Inference-Header-Content-Length``),
which ``tritonclient.http`` uses by default. Every check names the field at fault.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

_DTYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "UINT8": np.dtype("u1")}

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object"},
        "data": {"type": "array", "items": {"type": "number"}},
    },
}
INFER_REQUEST_SCHEMA = {
    "schema": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": _TENSOR},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                },
            },
        },
    }
}


class V2Error(ValueError):
    """A malformed inference request; the message says which field and why (sent back as a 400)."""


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    batch: np.ndarray  # float32 NHWC, checked
    binary_output: bool  # answer with the binary tensor extension


def parse_infer_request(body: bytes, header_length: str | None, predictor, max_batch: int) -> InferRequest:
    """Parse and validate a v2 infer body against the predictor's single image input.

    Raises:
        V2Error: anything wrong, with the field named.
    """
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise V2Error(f"Inference-Header-Content-Length {header_length!r} is not a length within the body")
        body, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        req = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise V2Error(f"body is not JSON ({exc})") from None
    except RecursionError:  # [[[[...]]]] thousands deep: the stdlib parser recurses per level
        raise V2Error("body is JSON nested too deeply; send a flat 'data' list") from None
    if not isinstance(req, dict):
        raise V2Error("body must be a JSON object with 'inputs'")
    params = _object(req.get("parameters"), "parameters")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise V2Error(f"'inputs' must be a list with exactly one tensor named {predictor.input_name!r}")
    tensor = inputs[0]
    name = tensor.get("name")
    if name != predictor.input_name:
        raise V2Error(f"inputs[0].name {name!r} is unknown; this model's input is {predictor.input_name!r}")
    dtype = _DTYPES.get(tensor.get("datatype"))
    if dtype is None:
        raise V2Error(f"inputs[0].datatype {tensor.get('datatype')!r} is not supported; send FP32")
    shape = _shape(tensor.get("shape"), predictor.size, max_batch)
    count = math.prod(shape)
    tparams = _object(tensor.get("parameters"), "inputs[0].parameters")
    if "binary_data_size" in tparams:
        size = tparams["binary_data_size"]
        if not isinstance(size, int) or size != count * dtype.itemsize or size > len(binary):
            raise V2Error(f"inputs[0].parameters.binary_data_size must be {count * dtype.itemsize} bytes of data")
        data = np.frombuffer(binary[:size], dtype=dtype).astype(np.float64)
    else:
        data = _json_data(tensor.get("data"), count)
    if not np.isfinite(data).all():
        raise V2Error("inputs[0].data contains NaN or infinity; send pixel values in 0..255")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise V2Error("inputs[0].data must hold pixel values in 0..255 (RGB, preprocessing is in the model)")
    _check_outputs(req.get("outputs"), predictor.output_name)
    binary_output = bool(params.get("binary_data_output", False))
    for out in req.get("outputs") or []:
        binary_output = bool(_object(out.get("parameters"), "outputs[].parameters").get("binary_data", False))
    request_id = req.get("id")
    return InferRequest(
        str(request_id) if request_id is not None else None,
        data.reshape(shape).astype(np.float32),
        binary_output,
    )


def encode_response(predictor, req: InferRequest, probs: np.ndarray) -> tuple[bytes, dict]:
    """The v2 response body and headers; binary when the request asked for it."""
    out = {"name": predictor.output_name, "datatype": "FP32", "shape": list(probs.shape)}
    resp = {"model_name": predictor.name, "model_version": "1", "outputs": [out]}
    if req.id is not None:
        resp["id"] = req.id
    if req.binary_output:
        raw = np.ascontiguousarray(probs, dtype="<f4").tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        header = json.dumps(resp).encode()
        headers = {
            "content-type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        }
        return header + raw, headers
    out["data"] = [float(v) for v in probs.reshape(-1)]
    return json.dumps(resp).encode(), {"content-type": "application/json"}


def _object(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2Error(f"'{where}' must be a JSON object")
    return value


def _shape(shape, size: tuple[int, int], max_batch: int) -> list[int]:
    h, w = size
    ok = isinstance(shape, list) and len(shape) == 4 and all(type(d) is int for d in shape)
    if not ok or shape[1:] != [h, w, 3] or not 1 <= shape[0] <= max_batch:
        raise V2Error(f"inputs[0].shape {shape!r} must be [N, {h}, {w}, 3] with 1 <= N <= {max_batch}")
    return shape


def _json_data(data, count: int) -> np.ndarray:
    if not isinstance(data, list):
        raise V2Error("inputs[0].data must be a list of numbers (or use the binary extension)")
    try:
        arr = np.asarray(data)
    except ValueError:
        raise V2Error("inputs[0].data is ragged; send a flat list in row-major order") from None
    if arr.dtype.kind not in "iuf" or arr.dtype == object:
        raise V2Error("inputs[0].data must hold only numbers")
    if arr.size != count:
        raise V2Error(f"inputs[0].data has {arr.size} values but the shape needs {count}")
    return arr.astype(np.float64).reshape(-1)


def _check_outputs(outputs, output_name: str) -> None:
    if outputs is None:
        return
    if not isinstance(outputs, list):
        raise V2Error("'outputs' must be a list")
    for out in outputs:
        if not isinstance(out, dict) or out.get("name") != output_name:
            got = out.get("name") if isinstance(out, dict) else out
            raise V2Error(f"outputs name {got!r} is unknown; this model's output is {output_name!r}")
