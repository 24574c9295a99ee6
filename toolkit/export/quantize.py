"""Quantization: calibration images, ONNX Runtime static (QDQ) and dynamic int8, and tfmot QAT."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError


def calibration_images(split, n: int, image_size: tuple, seed: int = 0, degrade: tuple = ()
                       ) -> tuple[np.ndarray, str]:
    """A stratified sample of ``n`` training images as float32 0-255, and its fingerprint.

    ``degrade``: camera degradations (:mod:`toolkit.degrade`) to draw the sample through, each on a seeded
    half of the images as in training, so the int8 ranges also cover what the door camera sends.

    Raises:
        ToolkitError: an empty split, or images whose shape does not match the model's input.
    """
    if split is None or not len(split):
        raise ToolkitError("calibration needs training images, but the train split is empty; pass --data")
    sample = split.take(min(n, len(split)), seed=seed)
    x, _ = sample.numpy()
    check_images(x, image_size, "calibration set")
    if degrade:
        from toolkit.degrade import TRAIN_PROBABILITY
        from toolkit.degrade import degrade as degrade_images

        x = degrade_images(x, degrade, seed, p=TRAIN_PROBABILITY)
    return x.astype(np.float32), sample.fingerprint


def check_images(x: np.ndarray, image_size: tuple, what: str) -> None:
    """Raise a one-line ToolkitError unless ``x`` is (N, H, W, 3) at the model's input size."""
    h, w = image_size
    if x.ndim != 4 or tuple(x.shape[1:]) != (h, w, 3):
        raise ToolkitError(
            f"{what}: images have shape {tuple(x.shape[1:])} but the model takes ({h}, {w}, 3); "
            "load the data at the model's image size"
        )


CALIBRATION_CHUNK = 50  # images whose activations are held at once while calibrating


def _reader(images: np.ndarray, shown=None):
    """Calibration images one at a time; ``set_range`` lets ORT take them a chunk at a time; each image
    handed out advances ``shown`` (a :func:`toolkit.progress.progress` display), if given."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.set_range(0, len(images))

        def __len__(self):
            return len(images)

        def set_range(self, start_index: int, end_index: int):
            self._it = iter(range(start_index, min(end_index, len(images))))

        def get_next(self):
            i = next(self._it, None)
            if i is not None and shown is not None:
                shown.advance(1)
            return None if i is None else {"image": images[i : i + 1]}

    return Reader()


def _chunk_options(n: int) -> dict:
    """ORT keeps every calibration image's activations until it builds its ranges (11.9 GB for 500
    ResNet50 images with percentile); collecting a chunk at a time bounds that. Its strided mode needs
    a chunk size that divides the image count: the largest divisor up to CALIBRATION_CHUNK."""
    if n <= CALIBRATION_CHUNK:
        return {}
    stride = max(d for d in range(1, CALIBRATION_CHUNK + 1) if n % d == 0)
    return {"CalibStridedMinMax": stride}


def _preprocess(src: Path, workdir: Path) -> Path:
    """ORT's recommended pre-pass (shape inference, graph optimisation) before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(workdir) / f"{Path(src).stem}.pre.onnx"
    if not out.exists():
        quant_pre_process(str(src), str(out))
    return out


def quantize_onnx_static(src: Path, dst: Path, images: np.ndarray, method: str, workdir: Path,
                         nodes_to_exclude: tuple = (), nodes_to_quantize: tuple = ()) -> None:
    """Static int8: QDQ, per-channel int8 weights, uint8 activations calibrated on ``images``.

    QUInt8 activations x QInt8 weights is the u8s8 path that x86 VNNI and ARM dot-product kernels
    run fastest in ORT; measured on the must-show ResNet50 it also matches QInt8 activations in accuracy.
    ``nodes_to_exclude`` stay float (mixed precision); a non-empty ``nodes_to_quantize`` quantizes only those
    (one layer's sensitivity). The ranges are calibrated once per ``workdir`` and method, then reused.
    """
    import inspect

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    from toolkit.progress import progress

    cache, calibrating = {}, True
    if "calibration_cache_path" in inspect.signature(quantize_static).parameters:  # ORT >= 1.24: calibrate once
        cached = Path(workdir) / f"calibration-{method}-{len(images)}.json"
        cache, calibrating = {"calibration_cache_path": str(cached)}, not cached.exists()
    # A bar only while ORT really runs the images (a cached calibration reads none of them).
    shown = progress("calibrating int8 ranges (ONNX)", total=len(images)) if calibrating else nullcontext()
    with shown as bar:
        quantize_static(
            str(_preprocess(src, workdir)),
            str(dst),
            _reader(images, bar),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            nodes_to_exclude=list(nodes_to_exclude),
            nodes_to_quantize=list(nodes_to_quantize),
            extra_options=_chunk_options(len(images)),
            **cache,
        )


def quantize_onnx_dynamic(src: Path, dst: Path, workdir: Path) -> None:
    """Dynamic int8: weights quantized ahead of time, activation ranges per batch (no calibration)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(_preprocess(src, workdir)), str(dst), weight_type=QuantType.QInt8)


def _output_config_class():
    import tensorflow_model_optimization as tfmot

    class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """Compute a layer in float, quantize only its output (preprocessing: Rescaling, Normalization).

        The layer stays inside the model; its output range is what the int8 TFLite converter needs to
        hand an int8 tensor to the next layer (a no-op config leaves that tensor without a range).
        """

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            quantizer = tfmot.quantization.keras.quantizers.MovingAverageQuantizer
            return [quantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

        def get_config(self):
            return {}

    return OutputQuantizeConfig


def annotate(model):
    """Annotate a flat model layer by layer for ``quantize_apply``.

    ``quantize_model`` rejects layers outside its registry (Rescaling, Normalization) and nested models.
    Supported layers get the default 8-bit config (BatchNormalization is folded into its conv by
    quantize_apply's transforms); anything else runs in float inside the model with a quantized output.

    Returns:
        (annotated model, custom objects for ``quantize_scope``).
    """
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
    )

    from toolkit._keras import keras

    k = keras()
    import tensorflow_model_optimization as tfmot

    annotate_layer = tfmot.quantization.keras.quantize_annotate_layer
    reg = registry.Default8BitQuantizeRegistry()
    output_only = _output_config_class()
    model = flatten(model)

    def clone(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, k.layers.InputLayer):
            return fresh
        if reg.supports(layer) or isinstance(layer, k.layers.BatchNormalization):
            return annotate_layer(fresh)
        return annotate_layer(fresh, quantize_config=output_only())

    annotated = k.models.clone_model(model, clone_function=clone)
    annotated.set_weights(model.get_weights())
    return annotated, {"OutputQuantizeConfig": output_only}


def flatten(model):
    """Re-wire a functional model that contains functional sub-models into one flat graph.

    The layers (and so the weights) are shared with ``model``; only the nesting disappears. A model
    without sub-models is returned as it is.
    """
    from toolkit._keras import keras

    k = keras()
    if not any(isinstance(layer, k.Model) for layer in model.layers):
        return model

    def run(m, inputs):
        values = {id(t): v for t, v in zip(m.inputs, inputs, strict=False)}
        for depth in sorted(m._nodes_by_depth, reverse=True):
            for node in m._nodes_by_depth[depth]:
                layer = node.layer
                if isinstance(layer, k.layers.InputLayer):
                    continue
                args = [values[id(t)] for t in node.keras_inputs]
                if isinstance(layer, k.Model):
                    out = run(layer, args)
                else:
                    out = layer(args[0] if len(args) == 1 else args)
                outs = out if isinstance(out, (list, tuple)) else [out]
                for t, v in zip(
                    node.outputs if isinstance(node.outputs, (list, tuple)) else [node.outputs],
                    outs,
                    strict=False,
                ):
                    values[id(t)] = v
        return [values[id(t)] for t in m.outputs]

    inputs = [k.Input(shape=t.shape[1:], name=t.name.split(":")[0]) for t in model.inputs]
    outputs = run(model, inputs)
    return k.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=model.name)


def fit_qat(model, train, labels: tuple, config):
    """Quantization-aware fine-tuning of ``model`` on the ``train`` split; returns the QAT model.

    Raises:
        ToolkitError: no training data (QAT needs it; a bare model file needs --data).
    """
    from toolkit._keras import keras

    k = keras()
    import tensorflow_model_optimization as tfmot

    if train is None or not len(train):
        raise ToolkitError("--quantize qat fine-tunes on training data, but the train split is empty; pass --data")
    model = flatten(model)
    annotated, custom = annotate(model)
    try:
        with tfmot.quantization.keras.quantize_scope(custom):
            qat = tfmot.quantization.keras.quantize_apply(annotated)
    except (RuntimeError, ValueError, TypeError) as exc:  # a layer or pattern tfmot cannot rebuild
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ToolkitError(f"--quantize qat: tfmot cannot rebuild this model for QAT ({first}); use --quantize "
                           "int8 (post-training) instead") from exc
    x, y = train.numpy()
    init_ranges(qat, model, x[:256].astype(np.float32))
    binary = len(labels) == 2
    qat.compile(
        optimizer=k.optimizers.Adam(config.qat_lr),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
    )
    k.utils.set_random_seed(config.seed)
    qat.fit(x.astype(np.float32), y, epochs=config.qat_epochs, batch_size=32, verbose=0, shuffle=True)
    return qat


def init_ranges(qat, model, images: np.ndarray, batch: int = 32) -> None:
    """Start every QAT activation range at the float model's observed range on ``images``.

    tfmot starts activation ranges at [-6, 6] and moves them by an EMA with decay 0.999, so a short
    fine-tuning (tens of steps) would keep ranges far too wide (or clip ResNet's larger activations)
    and QAT would lose to plain post-training int8. The quantizer of wrapper ``quant_X`` sees the
    output of float layer ``X``, so one float pass (min/max reduced in-graph) gives every range.
    """
    from toolkit._keras import keras, tf

    k, tf = keras(), tf()
    # Each layer's output tensor in *this* graph (a layer shared with another graph has several).
    produced = {}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            if not isinstance(node.layer, k.layers.InputLayer):
                outs = node.outputs if isinstance(node.outputs, (list, tuple)) else [node.outputs]
                produced[node.layer.name] = outs[0]
    names = sorted(produced)
    probe = k.Model(model.inputs, [produced[n] for n in names])

    @tf.function
    def stats(x):
        return tf.stack([tf.stack([tf.reduce_min(o), tf.reduce_max(o)]) for o in probe(x, training=False)])

    lo = hi = None
    for i in range(0, len(images), batch):
        s = stats(tf.constant(images[i : i + batch])).numpy()
        lo = s[:, 0] if lo is None else np.minimum(lo, s[:, 0])
        hi = s[:, 1] if hi is None else np.maximum(hi, s[:, 1])
    ranges = {n: (min(0.0, float(a)), max(0.0, float(b))) for n, a, b in zip(names, lo, hi, strict=True)}
    for layer in qat.layers:
        inner = getattr(layer, "layer", None)
        if type(layer).__name__ == "QuantizeLayer":  # quantizes the image itself (AllValuesQuantize)
            low, high = min(0.0, float(images.min())), max(0.0, float(images.max()))
            for var in layer.weights:
                short = var.name.split(":")[0]
                if short.endswith(("_min", "_max")):
                    var.assign(low if short.endswith("_min") else high)
            continue
        if inner is None or inner.name not in ranges:
            continue
        low, high = ranges[inner.name]
        for var in layer.weights:
            short = var.name.split("/")[-1].split(":")[0]
            if short in ("output_min", "post_activation_min"):
                var.assign(low)
            elif short in ("output_max", "post_activation_max"):
                var.assign(high)
