"""Quantization: calibration images, ONNX Runtime static (QDQ) and dynamic int8, and tfmot QAT."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError


def calibration_images(split, n: int, image_size: tuple, seed: int = 0) -> tuple[np.ndarray, str]:
    """A stratified sample of ``n`` training images as float32 0-255, and its fingerprint.

    Raises:
        ToolkitError: an empty split, or images whose shape does not match the model's input.
    """
    if split is None or not len(split):
        raise ToolkitError("calibration needs training images, but the train split is empty; pass --data")
    sample = split.take(min(n, len(split)), seed=seed)
    x, _ = sample.numpy()
    check_images(x, image_size, "calibration set")
    return x.astype(np.float32), sample.fingerprint


def check_images(x: np.ndarray, image_size: tuple, what: str) -> None:
    """Raise a one-line ToolkitError unless ``x`` is (N, H, W, 3) at the model's input size."""
    h, w = image_size
    if x.ndim != 4 or tuple(x.shape[1:]) != (h, w, 3):
        raise ToolkitError(
            f"{what}: images have shape {tuple(x.shape[1:])} but the model takes ({h}, {w}, 3); "
            "load the data at the model's image size"
        )


def _reader(images: np.ndarray):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(range(len(images)))

        def get_next(self):
            i = next(self._it, None)
            return None if i is None else {"image": images[i : i + 1]}

    return Reader()


def _preprocess(src: Path, workdir: Path) -> Path:
    """ORT's recommended pre-pass (shape inference, graph optimisation) before quantizing."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(workdir) / f"{Path(src).stem}.pre.onnx"
    if not out.exists():
        quant_pre_process(str(src), str(out))
    return out


def quantize_onnx_static(src: Path, dst: Path, images: np.ndarray, method: str, workdir: Path) -> None:
    """Static int8: QDQ, per-channel int8 weights, uint8 activations calibrated on ``images``.

    QUInt8 activations x QInt8 weights is the u8s8 path that x86 VNNI and ARM dot-product kernels
    run fastest in ORT; measured on the must-show ResNet50 it also matches QInt8 activations in accuracy.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    quantize_static(
        str(_preprocess(src, workdir)),
        str(dst),
        _reader(images),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=methods[method],
    )


def quantize_onnx_dynamic(src: Path, dst: Path, workdir: Path) -> None:
    """Dynamic int8: weights quantized ahead of time, activation ranges per batch (no calibration)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(_preprocess(src, workdir)), str(dst), weight_type=QuantType.QInt8)


def _noop_config_class():
    import tensorflow_model_optimization as tfmot

    class NoOpQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """Leave a layer float: preprocessing (Rescaling, Normalization) stays in the model, unquantized."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return []

        def get_config(self):
            return {}

    return NoOpQuantizeConfig


def annotate(model):
    """Annotate a flat model layer by layer for ``quantize_apply``.

    ``quantize_model`` rejects layers outside its registry (Rescaling, Normalization) and nested models.
    Supported layers get the default 8-bit config (BatchNormalization is folded into its conv by
    quantize_apply's transforms); anything else gets a no-op config, so it runs in float inside the model.

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
    noop = _noop_config_class()
    nested = [layer.name for layer in model.layers if isinstance(layer, k.Model)]
    if nested:
        model = flatten(model)

    def clone(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, k.layers.InputLayer):
            return fresh
        if reg.supports(layer) or isinstance(layer, k.layers.BatchNormalization):
            return annotate_layer(fresh)
        return annotate_layer(fresh, quantize_config=noop())

    annotated = k.models.clone_model(model, clone_function=clone)
    annotated.set_weights(model.get_weights())
    return annotated, {"NoOpQuantizeConfig": noop}


def flatten(model):
    """Re-wire a functional model that contains functional sub-models into one flat graph.

    The layers (and so the weights) are shared with ``model``; only the nesting disappears.
    """
    from toolkit._keras import keras

    k = keras()

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
        raise ToolkitError(
            "--quantize qat fine-tunes on training data, but the train split is empty; pass --data"
        )
    annotated, custom = annotate(model)
    with tfmot.quantization.keras.quantize_scope(custom):
        qat = tfmot.quantization.keras.quantize_apply(annotated)
    binary = len(labels) == 2
    qat.compile(
        optimizer=k.optimizers.Adam(config.qat_lr),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
    )
    x, y = train.numpy()
    k.utils.set_random_seed(config.seed)
    qat.fit(x.astype(np.float32), y, epochs=config.qat_epochs, batch_size=32, verbose=0, shuffle=True)
    return qat
