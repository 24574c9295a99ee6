"""MediaPipe's hand models (palm detector + 21-point landmark model) as ONNX, fetched from the pinned wheel.

``mediapipe==0.10.21`` is the last wheel that ships its model files; it is never installed (it pins numpy<2
and protobuf<5 and pulls jax): :mod:`toolkit.models.fetch` downloads it with ``--no-deps`` for one pinned
platform (the ``.tflite`` files are the same in every platform's wheel, so one wheel serves every machine),
checks the wheel and both files by sha256 and unpacks them with the wheel's licence::

    $TOOLKIT_CACHE/weights/mediapipe-0.10.21/
      palm_detection_full.tflite  hand_landmark_full.tflite  LICENSE
      palm_detection_full.onnx    hand_landmark_full.onnx    hands.json (the ONNX sha256s and their check)

Each file is converted once with tf2onnx (opset 17) and the ONNX is checked against the ``.tflite`` run by
ai-edge-litert on random and smooth inputs; :mod:`toolkit.inference.hands` then needs only onnxruntime. The palm
detector is then rewritten for speed (:mod:`toolkit.models.rewrite`: ``palm_detection_full.relu.onnx``, same
outputs), once, under its own key in ``hands.json``; exports carry the rewritten file.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.inference.manifest import sha256_file
from toolkit.models.fetch import WheelFile, fetch_files
from toolkit.models.rewrite import REWRITE, record_rewrite, rewrite_current, rewritten_path

log = logging.getLogger("toolkit.models")

_WHEEL = dict(package="mediapipe", version="0.10.21", wheel="mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
              wheel_sha256="05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
              licence="mediapipe-0.10.21.dist-info/LICENSE", platform="manylinux_2_28_x86_64", python="3.11")
PALM = WheelFile(member="mediapipe/modules/palm_detection/palm_detection_full.tflite",
                 sha256="1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54", **_WHEEL)
LANDMARK = WheelFile(member="mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
                     sha256="11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3", **_WHEEL)
LICENCE_NAME = "Apache-2.0"
LICENCE_FILE = "LICENSE.mediapipe"  # its name inside an export folder, beside the detector's
OPSET = 17
# Largest |ONNX - tflite| accepted, the outputs in input pixels as fractions of the input (see
# toolkit.models.tflite); tf2onnx 1.17 gives ~5e-6.
ATOL = 1.5e-4
PIXEL_OUTPUTS = ("Identity",)  # the first output of both models: box/keypoint regressors, landmarks (input px)
RECORD = "hands.json"


@dataclass(frozen=True)
class HandModels:
    """The two ONNX files, the licence of the wheel they came from, and what they are."""

    palm: Path
    landmark: Path
    licence: Path
    sha256: dict = field(default_factory=dict)  # file name -> sha256 (the ONNX files and their .tflite sources)
    source: str = ""

    @property
    def twins(self) -> dict:
        """{role: the ``.tflite`` each ONNX was converted from} (:mod:`toolkit.inference.litert` runs them): the
        wheel's file beside an ONNX converted in the weights cache (an ONNX from elsewhere has none)."""
        folder = Path(self.licence).parent
        pairs = (("palm", PALM, self.palm), ("landmark", LANDMARK, self.landmark))
        return {role: folder / Path(spec.member).name for role, spec, onnx in pairs
                if Path(onnx).parent == folder and (folder / Path(spec.member).name).is_file()}  # fmt: skip


def source_text() -> str:
    return f"{PALM.package}=={PALM.version} ({PALM.wheel}): {PALM.member}, {LANDMARK.member}"


def ensure_hand_models(weights: str | None = None, *, force: bool = False) -> HandModels:
    """The cached hand ONNX files, fetched, converted and checked first when they are not there.

    Args:
        weights: the path of a downloaded mediapipe 0.10.21 wheel (else the cache, else ``pip download``).
        force: convert again even when the cache holds checked ONNX files.

    Raises:
        ToolkitError: the wheel cannot be had (one line naming the pip command and where to put the wheel), a
            sha256 mismatch, or an ONNX that does not match its ``.tflite``.
    """
    wheel = weights if weights and str(weights).endswith(".whl") else None
    palm_tfl, landmark_tfl = fetch_files([PALM, LANDMARK], wheel)
    folder = palm_tfl.parent
    record_path = folder / RECORD
    onnx = [t.with_suffix(".onnx") for t in (palm_tfl, landmark_tfl)]
    record = _read(record_path)
    fresh = all(o.is_file() and record.get("sha256", {}).get(o.name) == sha256_file(o) for o in onnx)
    fast = rewritten_path(onnx[0])
    if force or not fresh or not rewrite_current(onnx[0], record):
        fresh = fresh and not force
        record = _convert(palm_tfl, landmark_tfl, onnx, record, fresh, record_path)
    licence = folder / Path(PALM.licence).name
    return HandModels(fast, onnx[1], licence, dict(record["sha256"]), record["source"])


def _convert(palm_tfl: Path, landmark_tfl: Path, onnx: list, record: dict, fresh: bool, record_path: Path) -> dict:
    """Convert both files (unless ``fresh``), then rewrite the palm detector; returns the new record."""
    folder = record_path.parent
    if not fresh:
        diffs = {}
        for tflite, out in zip((palm_tfl, landmark_tfl), onnx):
            diffs[out.name] = convert(tflite, out)
        record = {"source": source_text(), "opset": OPSET, "atol": ATOL, "max_diff": diffs,
                  "sha256": {p.name: sha256_file(p) for p in (*onnx, palm_tfl, landmark_tfl)}}  # fmt: skip
        log.info("hand models converted in %s (ONNX vs tflite max |diff| %s)", folder, diffs)
    fast, diff = record_rewrite(onnx[0], record, ATOL)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    log.info("palm detector rewritten (%s): %s, max |diff| %g", REWRITE, fast.name, diff)
    return record


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def convert(tflite: Path, onnx_path: Path, opset: int = OPSET) -> float:
    """Convert with tf2onnx and check it against the ``.tflite`` (:func:`toolkit.models.tflite.to_onnx`).

    Returns:
        The largest difference found (see :data:`ATOL`).

    Raises:
        ToolkitError: tf2onnx fails or the ONNX differs by more than :data:`ATOL` (nothing is kept).
    """
    from toolkit.models.tflite import to_onnx

    return to_onnx(tflite, onnx_path, atol=ATOL, value_range=(0.0, 1.0), pixel_outputs=PIXEL_OUTPUTS, opset=opset)


def copy_hand_models(folder: str | Path, models: HandModels) -> dict:
    """Copy both ONNX files, their ``.tflite`` twins and the wheel's licence into an export ``folder``; returns
    the manifest's record.

    The record names the files (palm detector first: it finds the hand the landmark model then reads), the twins
    (``tflite``: what LiteRT runs at the door, :mod:`toolkit.inference.litert`), every file's sha256, the precision
    and where they came from.
    """
    folder = Path(folder)
    files = {"palm": models.palm.name, "landmark": models.landmark.name}
    twins = {role: path.name for role, path in models.twins.items()}
    for src in (models.palm, models.landmark, *models.twins.values()):
        shutil.copy2(src, folder / src.name)
    if Path(models.licence).is_file():
        shutil.copy2(models.licence, folder / LICENCE_FILE)
    return {"kind": "mediapipe-hands", "files": files, "tflite": twins,
            "sha256": {name: sha256_file(folder / name) for name in (*files.values(), *twins.values())},
            "precision": "float32", "source": models.source or source_text(),
            "licence": LICENCE_FILE, "licence_name": LICENCE_NAME}  # fmt: skip
