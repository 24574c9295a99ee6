"""The TensorFlow-free door runtime: numpy, onnxruntime and Pillow only (opencv, gpiozero and
fastapi/uvicorn come with the ``door`` extra and are imported only where used).

``from toolkit.runtime import Predictor`` works; the names are resolved lazily so that the exporter,
which imports ``toolkit.runtime.manifest``, does not load onnxruntime as a side effect.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Predictor": "toolkit.runtime.predictor",
    "Prediction": "toolkit.runtime.predictor",
    "Manifest": "toolkit.runtime.manifest",
    "load_manifest": "toolkit.runtime.manifest",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toolkit.runtime' has no attribute {name!r}")
