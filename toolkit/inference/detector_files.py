"""Which BlazeFace file the door runs, and loading it: the one shipped inside the package, the weights cache's own
conversion, or an export's copy, each checked by sha256; and the ``.tflite`` each was converted from, which
LiteRT runs when installed (:mod:`toolkit.inference.litert`, docs/runtimes.md). The model itself and its
decoding: :mod:`toolkit.inference.detect`.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.inference.cache import weights_root
from toolkit.inference.detect import MARGIN, MIN_SCORE, NMS_IOU, FaceDetector

ONNX_NAME = "face_detection_short_range.onnx"
LICENSE_NAME = "LICENSE.mediapipe"


# The converted detector ships inside the package with its licence (the file exported/happy carries; its
# outputs match the wheel's .tflite to 7.9e-6), so a door-only install (no TensorFlow, no tf2onnx) has it.
ASSETS = Path(__file__).resolve().with_name("assets")
SHIPPED_SHA256 = "c7e791913445823014e6ddaa3f962162b1b4e3a07a5d6777abc0b1f61d00833f"
# Beside it, the wheel's own .tflite it was converted from (the wheel member's sha256): LiteRT runs it when
# installed (toolkit.inference.litert, docs/runtimes.md).
TFLITE_NAME = "face_detection_short_range.tflite"
TFLITE_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"


def cached_detector_path() -> Path:
    """Where ``toolkit detector --force`` (a conversion of the wheel's ``.tflite`` of one's own) leaves the ONNX."""
    return weights_root() / "blazeface" / ONNX_NAME


def shipped_detector_path() -> Path:
    """The detector ONNX shipped with the toolkit, its licence beside it, checked by sha256.

    Raises:
        ToolkitError: the file is missing or is not the one shipped.
    """
    from toolkit.inference.manifest import sha256_file

    path = ASSETS / ONNX_NAME
    if not path.is_file() or sha256_file(path) != SHIPPED_SHA256:
        raise ToolkitError(f"{path}: missing or not the face detector this toolkit shipped (sha256); reinstall "
                           "the toolkit")
    return path


def shipped_twin_path() -> Path | None:
    """The shipped ``.tflite`` of the detector when it is there and intact (else None: onnxruntime serves)."""
    from toolkit.inference.manifest import sha256_file

    path = ASSETS / TFLITE_NAME
    return path if path.is_file() and sha256_file(path) == TFLITE_SHA256 else None


def twin_of(path: Path) -> Path | None:
    """The shipped ``.tflite`` when ``path`` is a conversion of it: the shipped ONNX, or the cache's own conversion
    whose ``source.json`` names the same wheel member (sha256). Any other ONNX (a test's fake, a user's) has none."""
    import json

    path = Path(path)
    if path == ASSETS / ONNX_NAME:
        return shipped_twin_path()
    try:
        source = json.loads((path.parent / "source.json").read_text())
    except (OSError, ValueError):
        return None
    return shipped_twin_path() if path == cached_detector_path() and source.get("sha256") == TFLITE_SHA256 else None


def detector_path() -> Path:
    """The converted copy in the weights cache when there is one, else the shipped one."""
    cached = cached_detector_path()
    return cached if cached.is_file() else shipped_detector_path()


def manifest_detector(folder: str | Path) -> dict:
    """The ``detector`` record of an export folder's manifest ({} when it has none)."""
    from toolkit.inference.manifest import MANIFEST_NAME, load_manifest

    if not (Path(folder) / MANIFEST_NAME).is_file():
        return {}
    return dict(load_manifest(folder).detector or {})


def load_detector(folder: str | Path | None = None, threads: int = 1) -> FaceDetector:
    """The export's detector (file checked against its manifest sha256), else the cached one, else the shipped one.

    Raises:
        ToolkitError: the export's file does not match its manifest, or the shipped file is damaged.
    """
    from toolkit.inference.manifest import sha256_file

    record = manifest_detector(folder) if folder is not None else {}
    if record:
        path = Path(folder) / record.get("file", ONNX_NAME)
        if not path.is_file() or sha256_file(path) != record.get("sha256"):
            raise ToolkitError(f"{path}: missing or not the detector its manifest names (sha256); re-run 'toolkit "
                               "export --detector blazeface'")
        twin = None
        if record.get("tflite"):  # exports since the twins (docs/runtimes.md); older ones run the ONNX
            twin = Path(folder) / str(record["tflite"])
            if not twin.is_file() or sha256_file(twin) != record.get("tflite_sha256"):
                raise ToolkitError(f"{twin}: missing or not the detector .tflite its manifest names (sha256); re-run "
                                   "'toolkit export --detector blazeface'")
        return FaceDetector(path, min_score=float(record.get("min_score", MIN_SCORE)),
                            iou=float(record.get("nms_iou", NMS_IOU)), margin=float(record.get("margin", MARGIN)),
                            threads=threads, twin=twin)  # fmt: skip
    path = detector_path()
    return FaceDetector(path, threads=threads, twin=twin_of(path))
