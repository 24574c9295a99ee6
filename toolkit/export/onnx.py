"""ONNX export: tf2onnx from the tf_keras model (input ``image``), float16, and ORT int8 / dynamic / QAT."""

from __future__ import annotations

import json
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.export.config import one_line


def convert(model, image_size: tuple, opset: int, path: Path) -> Path:
    """Convert a tf_keras model to ONNX with one float32 NHWC input named ``image``; check and save it."""
    from toolkit._keras import tf

    tf = tf()
    import tf2onnx

    h, w = image_size
    spec = [tf.TensorSpec((None, h, w, 3), tf.float32, name="image")]
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    except Exception as exc:
        raise ToolkitError(f"ONNX conversion failed (opset {opset}): {one_line(exc)}") from exc
    save_checked(proto, path)
    return Path(path)


def save_checked(proto, path: Path, metadata: dict | None = None) -> None:
    """Attach ``metadata`` as metadata_props, run onnx.checker, then save."""
    import onnx

    if metadata:
        keep = [p for p in proto.metadata_props if p.key not in metadata]
        del proto.metadata_props[:]
        proto.metadata_props.extend(keep)
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ToolkitError(f"{Path(path).name}: onnx.checker rejected the exported graph: {one_line(exc)}") from exc
    onnx.save(proto, str(path))


def compact_names(proto) -> None:
    """Replace tf2onnx's long internal tensor and node names with short ones (graph inputs/outputs kept).

    Names are debugging aids; on a 40 KB int8 model they are over a tenth of the file.
    """
    graph = proto.graph
    if any(a.type in (5, 10) for node in graph.node for a in node.attribute):  # GRAPH/GRAPHS: subgraphs
        return
    keep = {v.name for v in [*graph.input, *graph.output]}
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return mapping.setdefault(name, f"t{len(mapping)}")

    for init in graph.initializer:
        init.name = short(init.name)
    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    for value in graph.value_info:
        value.name = short(value.name)


def to_float16(src: Path, dst: Path) -> None:
    """Half-precision weights and activations, float32 input and output (the caller's contract is unchanged).

    Sound on CPU because ORT inserts no silent fallbacks: the file is run and validated like any other.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True))
    model.topological_sort()  # the converter appends the input casts after their consumers
    onnx.save(model.model, str(dst))


def from_qat_tflite(ctx, path: Path) -> None:
    """QDQ ONNX from the QAT model's int8 TFLite file: int8 weights and the ranges QAT learned.

    Converting the Keras QAT model directly keeps float weights (tf2onnx folds the weight fake-quant
    into constants), so the file would be float-sized and ORT could not fuse it into integer kernels.
    """
    import onnx
    import tf2onnx

    from toolkit.export import tflite

    tfl = ctx.workdir / "qat_float_io.tflite"
    if not tfl.exists():
        tfl.write_bytes(tflite.convert(ctx.qat_model(), "qat", ctx.calibration))
    try:
        proto, _ = tf2onnx.convert.from_tflite(str(tfl), opset=ctx.config.opset)
    except Exception as exc:
        raise ToolkitError(f"ONNX conversion of the QAT model failed: {one_line(exc)}") from exc
    rename(proto, proto.graph.input[0].name, "image")
    rename(proto, proto.graph.output[0].name, ctx.model.output_names[0])
    onnx.save(proto, str(path))


def rename(proto, old: str, new: str) -> None:
    """Rename a value everywhere in the graph (the runtime looks the input up as ``image``)."""
    for node in proto.graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in [*proto.graph.input, *proto.graph.output]:
        if value.name == old:
            value.name = new


def export(ctx, path: Path, quantization: str, float_layers: tuple = ()) -> None:
    """Write ``path``: the float ONNX model, or its float16 / dynamic / int8 / QAT variant, with metadata.

    ``float_layers``: int8 only, Keras layers whose ONNX nodes stay float (mixed precision).
    """
    import onnx

    from toolkit.export import quantize

    path = Path(path)
    work = ctx.workdir / path.name
    if quantization == "none":
        work = ctx.float_onnx()
    elif quantization == "float16":
        to_float16(ctx.float_onnx(), work)
    elif quantization == "dynamic":
        quantize.quantize_onnx_dynamic(ctx.float_onnx(), work, ctx.workdir)
    elif quantization == "int8":
        excluded = [n for layer in float_layers for n in layer_nodes(ctx).get(layer, ())]
        quantize.quantize_onnx_static(
            ctx.float_onnx(), work, ctx.calibration, ctx.config.calibration_method, ctx.workdir, excluded
        )
    elif quantization == "qat":
        from_qat_tflite(ctx, work)
    else:
        raise ToolkitError(f"unknown ONNX quantization {quantization!r}")
    proto = onnx.load(str(work))
    compact_names(proto)
    save_checked(proto, path, {**ctx.metadata, "quantization": quantization})


def build_int8(ctx, path: Path, float_layers: tuple = ()) -> None:
    """The int8 file with ``float_layers`` (Keras names) left in float: mixed precision's build step."""
    export(ctx, path, "int8", tuple(float_layers))


MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def layer_nodes(ctx) -> dict[str, list[str]]:
    """Keras layer name -> the names of its nodes in the graph ORT quantizes.

    tf2onnx names nodes and tensors by the Keras path (``model/layer/op``) and ORT's pre-pass keeps them, but
    a fused op gets a fresh name (``Conv__19``: padding + conv + batch norm); its output tensor still carries
    the batch norm's name, and a folded batch norm counts as its conv. Only layers that do multiply-accumulates
    (:func:`toolkit.export.mixed.macs`) are mixed-precision candidates.
    """
    from toolkit.export import mixed, quantize

    def build():
        import onnx

        names, aliases = set(mixed.macs(ctx.model)), mixed.folded_into(ctx.model)

        def owner(text: str) -> str | None:
            parts = text.split("/")
            for part in reversed(parts[:-1]):
                part = aliases.get(part, part)
                if part in names:
                    return part
            return None

        pre = onnx.load(str(quantize._preprocess(ctx.float_onnx(), ctx.workdir)), load_external_data=False)
        found: dict[str, list[str]] = {}
        for node in pre.graph.node:
            found_by = owner(node.name) or next(filter(None, map(owner, node.output)), None)
            if found_by is None and node.op_type in MAC_OPS:  # last resort: the tensor it reads (a transpose)
                found_by = next(filter(None, map(owner, node.input)), None)
            if found_by is not None:
                found.setdefault(found_by, []).append(node.name)
        return found

    return ctx.cached("onnx_layer_nodes", build)


def sensitivity(ctx, images) -> dict[str, float]:
    """Keras layer name -> output error against float when only that layer is int8.

    The int8 file is quantized once; each layer's variant is the float graph with just that layer's inputs
    and weights routed through the int8 file's own QuantizeLinear/DequantizeLinear nodes (same ranges, same
    int8 weights), run from memory: the measure the issue asks for, without one re-quantization per layer.
    """
    import onnx

    from toolkit.export import mixed, quantize
    from toolkit.export.validate import predict

    pre = quantize._preprocess(ctx.float_onnx(), ctx.workdir)
    full = ctx.workdir / "all_layers_int8.onnx"
    quantize.quantize_onnx_static(ctx.float_onnx(), full, ctx.calibration, ctx.config.calibration_method,
                                  ctx.workdir)
    graph = onnx.load(str(pre))
    reference = predict(_memory_runner(graph), images)
    errors = {}
    for layer, variant in _one_layer_int8(graph, onnx.load(str(full)), layer_nodes(ctx)):
        errors[layer] = mixed.output_error(predict(_memory_runner(variant), images), reference)
    return errors


def _one_layer_int8(graph, qdq, layers: dict):
    """Yield (layer, the float ``graph`` with only ``layer``'s nodes reading int8 inputs and weights).

    ``graph`` is edited in place and restored after each yield, so a 100 MB model is never copied.
    """
    import onnx

    producer = {out: node for node in qdq.graph.node for out in node.output}
    q_nodes = {node.name: node for node in qdq.graph.node}
    q_inits = {init.name: init for init in qdq.graph.initializer}
    f_nodes = {node.name: node for node in graph.graph.node}
    have = {init.name for init in graph.graph.initializer} | {out for node in graph.graph.node for out in node.output}
    for layer, names in layers.items():
        nodes, inits, rewired, seen = [], [], [], set()
        for name in names:
            qn, fn = q_nodes.get(name), f_nodes.get(name)
            if qn is None or fn is None or len(qn.input) != len(fn.input):
                continue
            for pos, tensor in enumerate(qn.input):
                dq = producer.get(tensor)
                if dq is None or dq.op_type != "DequantizeLinear":
                    continue
                q = producer.get(dq.input[0])
                for node in ([q] if q is not None and q.op_type == "QuantizeLinear" else []) + [dq]:
                    if node.name in seen:
                        continue
                    seen.add(node.name)
                    copy = onnx.NodeProto()
                    copy.CopyFrom(node)
                    # a dequantized bias keeps its float initializer's name: give the copy its own
                    copy.output[:] = [o + "_int8_only" if o in have else o for o in copy.output]
                    nodes.append(copy)
                    inits += [q_inits[i] for i in node.input if i in q_inits and i not in have and i not in seen]
                    seen.update(node.input)
                rewired.append((fn, pos, fn.input[pos]))
                fn.input[pos] = tensor + "_int8_only" if tensor in have else tensor
        if not rewired:
            continue
        graph.graph.node.extend(nodes)  # after their consumers: ORT sorts the graph itself
        graph.graph.initializer.extend(inits)
        try:
            yield layer, graph
        finally:
            del graph.graph.node[len(graph.graph.node) - len(nodes):]
            del graph.graph.initializer[len(graph.graph.initializer) - len(inits):]
            for fn, pos, old in rewired:
                fn.input[pos] = old


def _memory_runner(proto):
    """A callable over an in-memory ONNX graph (no file written per variant)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.astype("float32", copy=False)})[0]
