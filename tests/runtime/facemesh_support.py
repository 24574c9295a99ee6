"""MediaPipe's real face-mesh files for tests: from the weights cache, or converted once from the wheel.

Never the network: without the cached ONNX files and without the mediapipe 0.10.21 wheel (the weights cache,
where .ci/run puts it, or $TOOLKIT_MEDIAPIPE_WHEEL), the tests that need them skip.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from hands_support import convert_from_wheel


@lru_cache(maxsize=1)
def real_face_mesh() -> tuple[Path, Path] | None:
    """(detector, landmark) ONNX paths, or None. Converted at most once per session (then cached on disk)."""
    from toolkit.inference.cache import weights_root
    from toolkit.inference.detector_files import cached_detector_path

    landmark = weights_root() / "mediapipe-0.10.21" / "face_landmark.onnx"
    detector = cached_detector_path()
    if landmark.is_file() and detector.is_file():
        return detector, landmark
    models = convert_from_wheel("toolkit.models.facemesh", "ensure_face_mesh")
    return None if models is None else (models.detector, models.landmark)
