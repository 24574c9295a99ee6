"""Which Keras layer each TFLite op comes from, and what quantizing each layer alone costs at the output."""

from __future__ import annotations

import warnings

import numpy as np

from toolkit.native import quiet_native_stderr


def keras_layers(model) -> dict[str, tuple[int, int]]:
    """Every leaf layer of ``model`` (nested models walked): name -> (parameter count, position in order)."""
    from toolkit._keras import keras

    k = keras()
    found: dict[str, tuple[int, int]] = {}

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, k.Model):
                walk(layer)
            elif not isinstance(layer, k.layers.InputLayer) and layer.name not in found:
                found[layer.name] = (int(layer.count_params()), len(found))

    walk(model)
    return found


def layer_ops(model, flatbuffer: bytes) -> list[dict]:
    """The TFLite ops of ``flatbuffer`` (converted from ``model``) with the Keras layers each came from.

    An op's output tensor is named after the TF ops fused into it, ``;``-joined TF paths such as
    ``model/relu0/Relu;model/conv0/Conv2D;model/pad0/Pad1``: a path component equal to a layer name marks
    that layer (whole components, so ``conv2d_1`` never matches ``conv2d_10``). An op named after no layer
    (the final activation is often ``StatefulPartitionedCall:0``) belongs to the layers of the op that
    feeds it. BatchNormalization and scaling layers folded into a convolution's constants have no op.

    Returns:
        one dict per op, in execution order: ``node`` (output tensor name, what the quantizer's deny list
        matches), ``op`` (builtin name), ``layers`` (Keras layer names), ``layer`` (the one that names it in
        sensitivity reports: the one with the most parameters, the earliest on a tie; None if no layer).
    """
    from ai_edge_litert.interpreter import Interpreter

    layers = keras_layers(model)
    it = Interpreter(model_content=flatbuffer)
    names = {d["index"]: d["name"] for d in it.get_tensor_details()}
    producer: dict[int, list[str]] = {}
    result = []
    # _get_ops_details is the interpreter's (underscored) op listing, the one TF's QuantizationDebugger reads.
    for op in it._get_ops_details():
        outputs = [int(o) for o in op["outputs"] if int(o) >= 0]
        matched: list[str] = []
        for o in outputs:
            matched += [n for n in named_layers(names.get(o, ""), layers) if n not in matched]
        if not matched:
            for i in op["inputs"]:
                for name in producer.get(int(i), []):
                    if name not in matched:
                        matched.append(name)
        for o in outputs:
            producer[o] = matched
        primary = max(matched, key=lambda n: (layers[n][0], -layers[n][1])) if matched else None
        if outputs:
            result.append({"node": names[outputs[0]], "op": op["op_name"], "layers": matched, "layer": primary})
    return result


def named_layers(tensor_name: str, layers) -> list[str]:
    """The names in ``layers`` that a TFLite tensor name mentions as a whole TF path component, in order.

    ``model/relu0/Relu;model/conv0/Conv2D`` mentions relu0 and conv0; ``model/conv2d_10/Conv2D`` mentions
    conv2d_10, never conv2d_1.
    """
    found: list[str] = []
    for path in tensor_name.split(";"):
        for part in path.split("/"):
            if part in layers and part not in found:
                found.append(part)
    return found


def local_errors(floating: bytes, int8: bytes, images: np.ndarray, threads: int | None = None) -> dict[str, float]:
    """Each op's own int8 error: relative RMS error of its output against the float file's same tensor, less
    the largest such error among the op outputs it reads (what it inherited), from one run of each file.

    Returns:
        output tensor name -> error (>= 0), for the ops whose output has the same name in both files.
    """
    from ai_edge_litert.interpreter import Interpreter

    from toolkit.cpu import cpu_count

    def tensors(flatbuffer):
        with warnings.catch_warnings():  # "intended for debugging purposes only": keeping them is the point here
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
            it = Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True,
                             num_threads=threads or cpu_count())
        inp = it.get_input_details()[0]
        it.resize_tensor_input(inp["index"], [len(images), *inp["shape"][1:]])
        with quiet_native_stderr():  # the XNNPACK delegate's INFO line, per interpreter
            it.allocate_tensors()
        it.set_tensor(inp["index"], images)
        it.invoke()
        details = {d["index"]: d for d in it.get_tensor_details()}
        values = {}
        for op in it._get_ops_details():
            if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
                continue
            for o in (int(o) for o in op["outputs"] if int(o) >= 0):
                d = details[o]
                v = it.get_tensor(o).astype(np.float32)
                scale, zero = d["quantization"]
                if np.issubdtype(d["dtype"], np.integer) and scale:
                    v = (v - zero) * scale
                values[d["name"]] = v
        reads = {details[int(o)]["name"]: [details[int(i)]["name"] for i in op["inputs"] if int(i) >= 0]
                 for op in it._get_ops_details() for o in op["outputs"] if int(o) >= 0}
        return values, reads

    f, _ = tensors(floating)
    q, reads = tensors(int8)
    rel = {}
    for name, v in q.items():
        ref = f.get(name)
        if ref is not None and ref.shape == v.shape:
            rel[name] = float(np.sqrt(np.mean((v - ref) ** 2)) / (np.sqrt(np.mean(ref**2)) + 1e-12))
    # a QUANTIZE between two int8 ops hides the producer's name: follow reads through it
    return {n: max(0.0, e - max((rel.get(i, 0.0) for i in _sources(n, reads, q)), default=0.0))
            for n, e in rel.items()}


def _sources(name: str, reads: dict, computed: dict) -> list[str]:
    """The computed tensors ``name``'s op reads, looking through QUANTIZE/DEQUANTIZE ops."""
    out, todo, seen = [], list(reads.get(name, [])), set()
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in computed:
            out.append(t)
        else:
            todo += reads.get(t, [])
    return out


def float_ops(flatbuffer: bytes) -> list[str]:
    """Output tensor names of the ops that compute in float32 (not QUANTIZE/DEQUANTIZE) in a TFLite file."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flatbuffer)
    details = {d["index"]: d for d in it.get_tensor_details()}
    found = []
    for op in it._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        outs = [details[int(o)] for o in op["outputs"] if int(o) >= 0]
        if outs and all(np.dtype(d["dtype"]) == np.float32 for d in outs):
            found.append(outs[0]["name"])
    return found
