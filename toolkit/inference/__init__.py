"""The exported-model format and its TensorFlow-free runners: numpy, onnxruntime and Pillow only.

Every stage shares this package: export writes the manifest and its chained files, bench and evaluate
read them, and the door (the runtime package) runs them. It imports nothing above it, so a Pi runs it
from the base install.

- ``manifest``: the export folder's ``manifest.json`` (files, labels, input, threshold, figures, licences).
- ``predictor``: one exported model (a single file or a chain) as a callable: image in, label and probability out.
- ``detect``: the BlazeFace face detector and its decoding (anchors, weighted NMS, the face crop).
- ``hands`` / ``handpipe``: the palm detector, hand-landmark tracker and the features a hand head reads.
- ``cache``: where fetched weights and cached features live (``$TOOLKIT_CACHE``).
"""

from toolkit.inference.manifest import Manifest, load_manifest
from toolkit.inference.predictor import Prediction, Predictor

__all__ = ["Manifest", "Prediction", "Predictor", "load_manifest"]
