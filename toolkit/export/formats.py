"""The export targets: a small record per format x quantization, and the context they export from.

Like Optimum's exporters, each record carries the tolerance its output is held to against the model it
was converted from; :mod:`toolkit.export.api` validates every file it writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.export import onnx as onnx_export
from toolkit.export import tflite as tflite_export
from toolkit.export.config import ExportConfig


@dataclass(frozen=True)
class Format:
    name: str  # "onnx" | "tflite"
    quantization: str  # "none" | "dynamic" | "float16" | "int8" | "qat"
    suffix: str
    export_fn: Callable  # (ctx: Context, path: Path) -> None; writes one file
    atol: float  # max |dp| against the source model (the QAT model for "qat") that tests accept
    lossy: bool  # float32 conversions must meet atol at export (else a bug); lossy ones are gated by --max-drop

    @property
    def filename(self) -> str:
        return "model" + ("" if self.quantization == "none" else f"_{self.quantization}") + self.suffix


@dataclass
class Context:
    """What every exporter needs; expensive intermediates are built once, on first use."""

    model: object  # the float tf_keras model
    labels: tuple
    image_size: tuple  # (height, width)
    calibration: np.ndarray  # float32 (N, H, W, 3) in 0-255, drawn from the training split
    train: object  # the training Split, for QAT fine-tuning
    config: ExportConfig
    metadata: dict  # ONNX metadata_props: labels, toolkit version, output kind
    workdir: Path  # scratch space outside the export folder
    _cache: dict = field(default_factory=dict)

    def cached(self, key: str, build: Callable):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def float_onnx(self) -> Path:
        """The float ONNX file, converted once and shared by every ONNX variant."""
        return self.cached(
            "float_onnx",
            lambda: onnx_export.convert(self.model, self.image_size, self.config.opset, self.workdir / "float.onnx"),
        )

    def qat_model(self):
        """The quantization-aware fine-tuned model, trained once for both formats."""
        from toolkit.export.quantize import fit_qat

        return self.cached("qat", lambda: fit_qat(self.model, self.train, self.labels, self.config))


FORMATS: dict[tuple[str, str], Format] = {}


def _register(*formats: Format) -> None:
    for f in formats:
        FORMATS[(f.name, f.quantization)] = f


_register(
    Format("tflite", "none", ".tflite", partial(tflite_export.export, quantization="none"), 1e-4, False),
    Format("tflite", "dynamic", ".tflite", partial(tflite_export.export, quantization="dynamic"), 0.05, True),
    Format("tflite", "float16", ".tflite", partial(tflite_export.export, quantization="float16"), 5e-3, True),
    Format("tflite", "int8", ".tflite", partial(tflite_export.export, quantization="int8"), 0.15, True),
    Format("tflite", "qat", ".tflite", partial(tflite_export.export, quantization="qat"), 0.15, True),
    Format("onnx", "none", ".onnx", partial(onnx_export.export, quantization="none"), 1e-4, False),
    Format("onnx", "dynamic", ".onnx", partial(onnx_export.export, quantization="dynamic"), 0.05, True),
    Format("onnx", "float16", ".onnx", partial(onnx_export.export, quantization="float16"), 5e-3, True),
    Format("onnx", "int8", ".onnx", partial(onnx_export.export, quantization="int8"), 0.15, True),
    Format("onnx", "qat", ".onnx", partial(onnx_export.export, quantization="qat"), 0.15, True),
)


def get_format(name: str, quantization: str) -> Format:
    """The record for ``name`` x ``quantization``.

    Raises:
        ToolkitError: an unknown combination, with the known ones listed.
    """
    try:
        return FORMATS[(name, quantization)]
    except KeyError:
        known = ", ".join(f"{n}/{q}" for n, q in FORMATS)
        raise ToolkitError(f"--format {name} --quantize {quantization}: unknown combination; known: {known}") from None


def select(config: ExportConfig) -> list[Format]:
    """The formats a config asks for, in a stable order (float files first)."""
    return [get_format(f, q) for f in config.formats for q in config.quantize]
