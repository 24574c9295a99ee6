"""The door: camera loop, policy, relay, snapshots, HTTP API, page, MQTT and systemd (TensorFlow-free).

The exported-model format the door runs lives in ``toolkit.inference``; import ``Predictor`` and
``load_manifest`` from there. The old names here still resolve for one release, with a DeprecationWarning.
"""

from __future__ import annotations

import importlib
import warnings

_MOVED = {"Predictor": "predictor", "Prediction": "predictor", "Manifest": "manifest", "load_manifest": "manifest"}


def __getattr__(name: str):
    if name in _MOVED:
        new = f"toolkit.inference.{_MOVED[name]}"
        warnings.warn(f"toolkit.runtime.{name} moved to toolkit.inference.{name}; the old name goes in the next "
                      f"release", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(new), name)
    raise AttributeError(f"module 'toolkit.runtime' has no attribute {name!r}")
