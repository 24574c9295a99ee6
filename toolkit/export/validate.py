"""Run any exported file (ONNX via onnxruntime, TFLite via ai-edge-litert) and score it against Keras.

Nothing here imports TensorFlow: the benchmark and the tests use the same runners as export.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from toolkit import metrics
from toolkit.cpu import cpu_count
from toolkit.errors import ToolkitError
from toolkit.export.config import one_line
from toolkit.metrics import far_frr, wilson_interval
from toolkit.native import quiet_native_stderr


class OnnxRunner:
    """An onnxruntime session over one file; ``threads=None`` lets ORT use every core."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ToolkitError(f"{path}: onnxruntime cannot load it ({one_line(exc, 200)})") from exc
        self.path = path
        self.input = self.session.get_inputs()[0].name
        self.input_dtype = "float32"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(None, {self.input: x.astype(np.float32, copy=False)})[0]
        except Exception as exc:  # a damaged graph can load and still fail to run
            raise ToolkitError(f"{self.path}: onnxruntime cannot run it ({one_line(exc, 200)})") from exc


class TFLiteRunner:
    """An ai-edge-litert interpreter; quantized (uint8/int8) inputs and outputs are handled here."""

    def __init__(self, path: Path, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads or cpu_count())
        except Exception as exc:
            raise ToolkitError(f"{path}: ai-edge-litert cannot load it ({one_line(exc, 200)})") from exc
        self.path = path
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self.input_dtype = np.dtype(self._in["dtype"]).name
        self._batch = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        try:
            return self._run(x)
        except (RuntimeError, ValueError) as exc:  # a damaged file can load and still fail to allocate or run
            raise ToolkitError(f"{self.path}: ai-edge-litert cannot run it ({one_line(exc, 200)})") from exc

    def _run(self, x: np.ndarray) -> np.ndarray:
        it = self.interpreter
        if self._batch != len(x):
            it.resize_tensor_input(self._in["index"], [len(x), *self._in["shape"][1:]])
            with quiet_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." per file
                it.allocate_tensors()
            self._batch = len(x)
        scale, zero = self._in["quantization"]
        dtype = self._in["dtype"]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            x = np.clip(np.round(x.astype(np.float32) / scale + zero), info.min, info.max)
        it.set_tensor(self._in["index"], x.astype(dtype))
        it.invoke()
        y = it.get_tensor(self._out["index"])
        scale, zero = self._out["quantization"]
        if np.issubdtype(y.dtype, np.integer):
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)


def load_runner(path: str | Path, threads: int | None = None):
    """A callable ``(N, H, W, 3) 0-255 -> (N, C) probabilities`` for an .onnx or .tflite file."""
    path = Path(path)
    if path.suffix == ".onnx":
        return OnnxRunner(path, threads)
    if path.suffix == ".tflite":
        return TFLiteRunner(path, threads)
    raise ToolkitError(f"{path}: unknown model file type; expected .onnx or .tflite")


def predict(runner, x: np.ndarray, batch: int = 32, what: str = "checking an exported file") -> np.ndarray:
    """Run ``runner`` over ``x`` in batches, showing progress as ``what``; returns float32 (N, C)."""
    from toolkit.progress import progress

    outs = []
    with progress(what, total=len(x)) as shown:
        for i in range(0, len(x), batch):
            outs.append(runner(x[i : i + batch]))
            shown.advance(len(outs[-1]))
    return np.concatenate(outs).reshape(len(x), -1).astype(np.float32)


def classes(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Predicted class per row: sigmoid column -> p >= threshold, softmax -> argmax."""
    probs = np.asarray(probs).reshape(len(probs), -1)
    if probs.shape[1] == 1:
        return (probs[:, 0] >= threshold).astype(np.int64)
    return probs.argmax(axis=1).astype(np.int64)


def compare(probs: np.ndarray, reference: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy (percent) of ``probs`` and of the float ``reference``, top-1 agreement and |dp|."""
    pred, ref = classes(probs), classes(reference)
    dp = np.abs(probs.reshape(reference.shape) - reference)
    return {
        "n": int(len(y)),
        "accuracy": round(100.0 * float(np.mean(pred == y)), 3),
        "float_accuracy": round(100.0 * float(np.mean(ref == y)), 3),
        "agreement": round(100.0 * float(np.mean(pred == ref)), 3),
        "max_abs_dprob": float(dp.max()) if dp.size else 0.0,
        "mean_abs_dprob": float(dp.mean()) if dp.size else 0.0,
    }


def choose_threshold(p_pos: np.ndarray, y: np.ndarray, target_far: float) -> dict:
    """The lowest threshold t whose false-accept rate on this data is <= ``target_far``.

    FAR(t) = fraction of negatives (y == 0) with p >= t; FRR(t) = fraction of positives with p < t.
    With n negatives at most floor(target_far * n) may score >= t, so t sits just above the
    (k+1)-th highest negative score. On a small test split (n < 1 / target_far) k is 0 and t lands
    just above the highest negative: FAR is 0 on the sample, but the real rate is only known to be
    below ``far_upper_95`` (the rule of three, 3 / n), which the manifest records next to it.

    Raises:
        ToolkitError: no negatives to measure a false-accept rate on.
    """
    p_pos = np.asarray(p_pos, dtype=np.float64).reshape(-1)
    y = np.asarray(y).reshape(-1)
    neg, pos = np.sort(p_pos[y == 0])[::-1], p_pos[y == 1]
    if not len(neg):
        raise ToolkitError("the validation data has no negative examples: cannot choose a threshold for --target-far")
    k = int(math.floor(target_far * len(neg) + 1e-9))
    t = 0.0 if k >= len(neg) else float(np.nextafter(neg[k], np.inf))
    t = min(max(t, 0.0), 1.0)
    far, frr = far_frr(p_pos, y == 1, t)
    return {
        "threshold": t,
        "far": far,
        "frr": frr,
        "negatives": int(len(neg)),
        "positives": int(len(pos)),
        "far_upper_95": metrics.far_upper_95(len(neg)) if k == 0 else None,
        "far_95": wilson_interval(round(far * len(neg)), len(neg)),
        "frr_95": wilson_interval(round(frr * len(pos)), len(pos)),
    }



def threshold_at(threshold: float, p_pos: np.ndarray, y: np.ndarray) -> dict:
    """FAR and FRR of a threshold chosen elsewhere, measured on ``p_pos`` / ``y`` (the same keys as
    :func:`choose_threshold`; ``far_upper_95`` when no negative passed: the rule of three)."""
    p_pos = np.asarray(p_pos, dtype=np.float64).reshape(-1)
    y = np.asarray(y).reshape(-1)
    far, frr = far_frr(p_pos, y == 1, threshold)
    negatives = int(np.sum(y == 0))
    upper = metrics.far_upper_95(negatives) if negatives and far == 0 else None
    positives = int(np.sum(y == 1))
    return {"threshold": float(threshold), "far": far, "frr": frr, "negatives": negatives,
            "positives": positives, "far_upper_95": upper,
            "far_95": wilson_interval(round(far * negatives), negatives),
            "frr_95": wilson_interval(round(frr * positives), positives)}


class GateError(ToolkitError):
    """One exported file failed its check; the export writes the files that passed and names this one."""


def allowed_drop(max_drop: float, n: int) -> float:
    """The accuracy drop (points) a file may show on ``n`` held-out images: ``max_drop``, but never less than one
    image's worth (100 / n). A split of 186 images cannot tell one flipped image (0.54 points) from noise, so a
    --max-drop of 0.5 must not fail on it; two flipped images (1.08) still fail."""
    return max(float(max_drop), 100.0 / n if n else 0.0)


def gate(fmt, validation: dict, max_drop: float, mixed_record: dict | None = None) -> None:
    """Raise a one-line :class:`GateError` when a file is wrong (float) or loses more than
    :func:`allowed_drop` points.

    ``mixed_record``: what automatic mixed precision tried, for the message when even that missed.
    """
    name = fmt.filename
    if not fmt.lossy and validation["max_abs_dprob_source"] > fmt.atol:
        raise GateError(
            f"{name}: outputs differ from the Keras model by {validation['max_abs_dprob_source']:.2e} "
            f"> tolerance {fmt.atol:g}: the conversion is wrong"
        )
    drop = validation["float_accuracy"] - validation["accuracy"]
    allowed = allowed_drop(max_drop, validation["n"])
    if drop <= allowed + 1e-9:  # the accuracies are rounded to 3 decimals
        return
    lo_hi = validation.get("drop_95")
    interval = f", 95% interval {lo_hi[0]:.1f} to {lo_hi[1]:.1f}" if lo_hi else ""
    head = (f"{name}: accuracy {validation['accuracy']:.1f}% vs float {validation['float_accuracy']:.1f}% on "
            f"{validation['n']} images (drop {drop:.1f} points{interval} > --max-drop {max_drop:g}); ")
    if mixed_record is not None:
        tried = mixed_record.get("failed") or (
            f"with {len(mixed_record['float_layers'])} of {mixed_record['candidates']} layers in float (chosen on "
            f"the {mixed_record['selection_split']} split); plain int8 lost "
            f"{mixed_record['plain_int8']['drop']:.1f}")
        raise GateError(head + f"automatic mixed precision did not help: {tried}; try --quantize qat, "
                        "more --calibration images or a larger --max-drop")
    raise GateError(head + (
        "try more --qat-epochs or a larger --max-drop"
        if fmt.quantization == "qat"
        else "try --quantize qat, more --calibration images, another --calibration-method or a larger --max-drop"
    ))
