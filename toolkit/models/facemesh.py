"""MediaPipe's face mesh (468 landmarks) as ONNX, fetched from the pinned wheel, beside the BlazeFace detector.

``face_landmark.tflite`` of ``mediapipe==0.10.21`` comes through :mod:`toolkit.models.fetch` (the same wheel as
the hand models and the detector: downloaded at most once, checked by sha256, never installed) and is converted
once with tf2onnx (opset 17) into the weights cache, checked against the ``.tflite`` run by ai-edge-litert::

    $TOOLKIT_CACHE/weights/mediapipe-0.10.21/
      face_landmark.tflite  face_landmark.onnx  facemesh.json (the ONNX sha256 and its check)  LICENSE
      face_landmark.relu.onnx  (the same graph, PRelu rewritten for speed: :mod:`toolkit.models.rewrite`; what
                                exports carry)
    $TOOLKIT_CACHE/weights/blazeface/face_detection_short_range.onnx  (toolkit.models.detector)

``face_landmark_with_attention.tflite`` (478 points) is not used: its custom ops do not convert to a graph
onnxruntime accepts. :mod:`toolkit.inference.facemesh` then needs only onnxruntime.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.inference.manifest import sha256_file
from toolkit.models.fetch import WheelFile, fetch_files
from toolkit.models.hands import _WHEEL, LICENCE_FILE, LICENCE_NAME, OPSET
from toolkit.models.rewrite import REWRITE, record_rewrite, rewrite_current, rewritten_path

log = logging.getLogger("toolkit.models")

FACE_LANDMARK = WheelFile(member="mediapipe/modules/face_landmark/face_landmark.tflite",
                          sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814", **_WHEEL)
# Largest |ONNX - tflite| accepted, the landmarks (crop pixels) as fractions of the 192 px input, the presence
# logit relative above 1 (toolkit.models.tflite); tf2onnx 1.17 gives ~2e-6.
ATOL = 1.5e-4
PIXEL_OUTPUTS = ("conv2d_21",)  # the 1,404 landmark values (468 x, y, z in crop pixels)
RECORD = "facemesh.json"


@dataclass(frozen=True)
class FaceMeshModels:
    """The detector and landmark ONNX files, the wheel's licence, their sha256s and where they came from."""

    detector: Path
    landmark: Path
    licence: Path
    sha256: dict = field(default_factory=dict)  # file name -> sha256
    source: str = ""
    max_diff: float = 0.0  # the landmark ONNX's check against its .tflite

    @property
    def twins(self) -> dict:
        """{role: the ``.tflite`` the ONNX was converted from} (:mod:`toolkit.inference.litert` runs them): the
        wheel's file beside a landmark ONNX converted in the weights cache, and the detector's own
        (:func:`toolkit.inference.detect.twin_of`); an ONNX from elsewhere has none."""
        from toolkit.inference.detector_files import twin_of

        folder = Path(self.licence).parent
        twin = folder / Path(FACE_LANDMARK.member).name
        out = {"landmark": twin} if Path(self.landmark).parent == folder and twin.is_file() else {}
        detector = twin_of(Path(self.detector))
        return {**out, "detector": detector} if detector is not None else out


def source_text() -> str:
    return f"{FACE_LANDMARK.package}=={FACE_LANDMARK.version} ({FACE_LANDMARK.wheel}): {FACE_LANDMARK.member}"


def ensure_face_mesh(weights: str | None = None, *, force: bool = False) -> FaceMeshModels:
    """The cached face-mesh ONNX (and the BlazeFace detector), fetched, converted and checked when not there.

    Args:
        weights: the path of a downloaded mediapipe 0.10.21 wheel (else the cache, else ``pip download``).
        force: convert again even when the cache holds a checked ONNX.

    Raises:
        ToolkitError: the wheel cannot be had (one line naming the pip command and where to put it), a sha256
            mismatch, or an ONNX that does not match its ``.tflite``.
    """
    from toolkit.models.detector import ensure_detector

    wheel = weights if weights and str(weights).endswith(".whl") else None
    detector = ensure_detector(wheel)
    (tflite,) = fetch_files([FACE_LANDMARK], wheel)
    onnx = tflite.with_suffix(".onnx")
    record_path = tflite.parent / RECORD
    record = _read(record_path)
    fresh = not force and onnx.is_file() and record.get("sha256", {}).get(onnx.name) == sha256_file(onnx)
    if not fresh:
        diff = convert(tflite, onnx)
        record = {"source": source_text(), "opset": OPSET, "atol": ATOL, "max_diff": diff,
                  "sha256": {p.name: sha256_file(p) for p in (onnx, tflite)}}  # fmt: skip
        log.info("face landmark model converted in %s (ONNX vs tflite max |diff| %.2e)", onnx, diff)
    fast = rewritten_path(onnx)
    if not fresh or not rewrite_current(onnx, record):
        # 23 PRelu nodes: the rewritten graph runs in ~0.6x the time, outputs identical (max |diff| 0 measured)
        fast, diff = record_rewrite(onnx, record, ATOL)
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        log.info("face landmark model rewritten (%s): %s, max |diff| %g", REWRITE, fast.name, diff)
    sums = {**record["sha256"], detector.name: sha256_file(detector)}
    return FaceMeshModels(detector, fast, tflite.parent / Path(FACE_LANDMARK.licence).name, sums, record["source"],
                          float(record.get("max_diff", 0.0)))


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def convert(tflite: Path, onnx_path: Path, opset: int = OPSET) -> float:
    """Convert with tf2onnx and check against the ``.tflite`` (:func:`toolkit.models.tflite.to_onnx`).

    Raises:
        ToolkitError: tf2onnx fails or the ONNX differs by more than :data:`ATOL` (nothing is kept).
    """
    from toolkit.models.tflite import to_onnx

    return to_onnx(tflite, onnx_path, atol=ATOL, value_range=(0.0, 1.0), pixel_outputs=PIXEL_OUTPUTS, opset=opset)


def copy_face_mesh(folder: str | Path, models: FaceMeshModels) -> dict:
    """Copy the landmark ONNX, its ``.tflite`` twin and the wheel's licence into an export ``folder``; returns
    the manifest's record.

    The detector travels as the export's ``detector`` record (:func:`toolkit.models.detector.copy_detector`).
    """
    folder = Path(folder)
    shutil.copy2(models.landmark, folder / models.landmark.name)
    twin = models.twins.get("landmark")
    if twin is not None:
        shutil.copy2(twin, folder / twin.name)
    if Path(models.licence).is_file():
        shutil.copy2(models.licence, folder / LICENCE_FILE)
    source = models.source or source_text()
    if models.landmark.name == rewritten_path(models.landmark.with_name("face_landmark.onnx")).name:
        source += f"; PRelu rewritten ({REWRITE}: Relu + slope * Min, same outputs)"
    names = [models.landmark.name, *([twin.name] if twin is not None else [])]
    return {"kind": "mediapipe-face-mesh", "files": {"landmark": models.landmark.name},
            "tflite": {"landmark": twin.name} if twin is not None else {},
            "sha256": {name: sha256_file(folder / name) for name in names},
            "precision": "float32", "source": source,
            "licence": LICENCE_FILE, "licence_name": LICENCE_NAME}  # fmt: skip
