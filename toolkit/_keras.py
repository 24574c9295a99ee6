"""The one door to TensorFlow.

tensorflow-model-optimization and tf2onnx need the Keras 2 API, so ``TF_USE_LEGACY_KERAS=1`` must be
set before TensorFlow is first imported. Every module that needs TensorFlow calls :func:`tf` or
:func:`keras` from here, inside a function, so ``toolkit --help`` and the door runtime stay fast and
TensorFlow-free.
"""

from __future__ import annotations

import os
import sys

from toolkit.errors import ToolkitError
from toolkit.native import quiet_native_stderr

INSTALL_HINT = "TensorFlow is not installed: install the training extra with pip install 'door-camera-toolkit[train]'"


def _setup_env() -> None:
    if sys.modules.get("tensorflow") is not None and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise RuntimeError("tensorflow was imported before toolkit._keras: import TensorFlow through toolkit._keras")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter off the console


def tf():
    """Return the ``tensorflow`` module, configured for the Keras 2 API."""
    if sys.modules.get("tensorflow") is not None and os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        return sys.modules["tensorflow"]
    _setup_env()
    try:
        with quiet_native_stderr():
            import tensorflow

            tensorflow.config.list_physical_devices()  # the CUDA probe logs here, once
    except ImportError as exc:  # pragma: no cover - exercised in the runtime-only venv
        raise ToolkitError(INSTALL_HINT) from exc
    return tensorflow


def keras():
    """Return ``tf_keras`` (Keras 2). Never ``tf.keras`` and never Keras 3."""
    tf()
    try:
        import tf_keras
    except ImportError as exc:  # pragma: no cover
        raise ToolkitError(INSTALL_HINT) from exc
    return tf_keras


def predict_array(model, x, batch_size: int = 32):
    """``model.predict(x, batch_size)`` for an in-memory array, fed as a plain batched ``tf.data`` pipeline.

    Keras feeds an array through its own pipeline, whose parallel map tf.data's ``make_deterministic``
    rewrite (active once training has switched op determinism on) turns into a plain map; TensorFlow
    2.21's rewrite keeps an attribute the plain map lacks and logs ``E0000 ... NodeDef mentions attribute
    use_unbounded_threadpool`` each time: noise a user reads as an error. This pipeline has no parallel
    map to rewrite; the batches, and so the outputs, are the same.
    """
    t = tf()
    return model.predict(t.data.Dataset.from_tensor_slices(x).batch(batch_size), verbose=0)
