"""The BlazeFace detector's files: taken from the mediapipe wheel, converted to ONNX once, cached.

:mod:`toolkit.models.fetch` gets ``face_detection_short_range.tflite`` and the wheel's licence out of
``mediapipe==0.10.21`` (``pip download --no-deps``, never installed: it pins numpy<2 and protobuf<5, or a wheel
the user points at), both checked by sha256. The ONNX from tf2onnx is checked against the ``.tflite`` run by
ai-edge-litert and kept with the licence in ``$TOOLKIT_CACHE/weights/blazeface/`` (default
~/.cache/toolkit/weights). The door (:mod:`toolkit.inference.detect`) then needs only onnxruntime.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from toolkit.inference.detect import INPUT_SIZE
from toolkit.inference.detector_files import (
    ASSETS,
    LICENSE_NAME,
    ONNX_NAME,
    TFLITE_SHA256,
    cached_detector_path,
    shipped_detector_path,
)
from toolkit.inference.manifest import sha256_file
from toolkit.models.fetch import WheelFile, fetch_file
from toolkit.models.tflite import require_converter

log = logging.getLogger("toolkit.models")

BLAZEFACE = WheelFile(
    package="mediapipe",
    version="0.10.21",
    wheel="mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
    wheel_sha256="05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
    member="mediapipe/modules/face_detection/face_detection_short_range.tflite",
    sha256=TFLITE_SHA256,  # the file the toolkit also ships (toolkit.inference.detector_files)
    licence="mediapipe-0.10.21.dist-info/LICENSE",
    platform="manylinux_2_28_x86_64",
    python="3.11",
    option="--wheel",
)
LICENCE_SPDX = "Apache-2.0"
# Largest |ONNX - tflite| on the check inputs (regressors as fractions of the 128 px input, logits relative above 1,
# see toolkit.models.tflite); tf2onnx 1.17 gives ~8e-6
ATOL = 1e-4
# What the shipped detector computes in, for the export manifest. tf2onnx expands the .tflite's float16 weights
# to float32; the export quantizes only the toolkit's own model: without the detector's training data there is no
# calibration set to check an int8 detector against, and the door's crop depends on its boxes.
PRECISION = {"precision": "float32", "precision_source": "float16 weights in the wheel's .tflite, float32 in the "
             "ONNX; third-party, not quantized by the export"}


def convert(tflite: Path, onnx_path: Path, opset: int = 17) -> float:
    """Convert the ``.tflite`` with tf2onnx and check it (:func:`toolkit.models.tflite.to_onnx`); the max difference.

    Raises:
        ToolkitError: the conversion fails or the ONNX differs by more than :data:`ATOL`.
    """
    from toolkit.models.tflite import to_onnx

    return to_onnx(tflite, onnx_path, atol=ATOL, value_range=(-1.0, 1.0), pixel_outputs=("regressors",), opset=opset)


def ensure_detector(wheel: str | Path | None = None, *, find_links: str | None = None, force: bool = False,
                    spec: WheelFile = BLAZEFACE) -> Path:  # fmt: skip
    """The detector ONNX: the cache's own conversion when there is one, else the one shipped with the toolkit.

    Given a wheel, a find-links folder or ``force``, it converts the wheel's ``.tflite`` itself (tf2onnx, the
    training extra) into the cache, checked against the ``.tflite``; later calls then return that copy.

    Args:
        wheel: a downloaded mediapipe wheel to use instead of pip download.
        find_links: a local folder of wheels for pip (``--no-index``); tests use a fake wheel there.
        force: fetch and convert again even when the cache has the file.

    Returns:
        the ONNX path; its licence (and for a conversion ``source.json``: the record, the sha256s and the ONNX
        check) lie beside it.

    Raises:
        ToolkitError: no tf2onnx for a conversion (one line: the training extra, and that the shipped file needs
            none); see :func:`toolkit.models.fetch.fetch_file` and :func:`convert`.
    """
    target = cached_detector_path()
    record = target.parent / "source.json"
    if target.is_file() and record.is_file() and not force:
        if json.loads(record.read_text()).get("onnx_sha256") == sha256_file(target):
            return target
        log.warning("%s: does not match %s; fetching the detector again", target, record)
    elif not (force or wheel or find_links):
        return shipped_detector_path()
    require_converter("converting the detector from the mediapipe wheel", "the toolkit ships it converted: "
                      f"{ASSETS / ONNX_NAME}")
    tflite = fetch_file(spec, wheel, find_links)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".blazeface-", dir=target.parent) as tmp:
        onnx_tmp = Path(tmp) / ONNX_NAME
        diff = convert(tflite, onnx_tmp)
        info = {**asdict(spec), "wheel_used": Path(wheel).name if wheel else spec.wheel,
                "onnx_sha256": sha256_file(onnx_tmp), "onnx_max_diff": diff, "atol": ATOL}  # fmt: skip
        shutil.copy2(tflite.parent / Path(spec.licence).name, target.parent / LICENSE_NAME)
        os.replace(onnx_tmp, target)
        record.write_text(json.dumps(info, indent=2) + "\n")
    log.info("BlazeFace detector cached in %s (ONNX vs tflite max |diff| %.2e)", target, diff)
    return target


def copy_detector(folder: Path, source: Path | None = None) -> dict:
    """Copy the detector ONNX, the ``.tflite`` it was converted from (LiteRT runs it at the door: docs/runtimes.md)
    and the licence into an export ``folder``; returns the manifest's record."""
    from toolkit.inference.detect import MARGIN, MIN_SCORE, NMS_IOU
    from toolkit.inference.detector_files import TFLITE_NAME, twin_of

    source = Path(source or cached_detector_path())
    shutil.copy2(source, folder / ONNX_NAME)
    licence = source.parent / LICENSE_NAME
    if licence.is_file():
        shutil.copy2(licence, folder / LICENSE_NAME)
    twin = twin_of(source)  # the wheel member it was converted from (None: an ONNX of another origin)
    twin_record = {}
    if twin is not None:
        shutil.copy2(twin, folder / TFLITE_NAME)
        twin_record = {"tflite": TFLITE_NAME, "tflite_sha256": sha256_file(folder / TFLITE_NAME)}
    return {"kind": "blazeface", "file": ONNX_NAME, "sha256": sha256_file(folder / ONNX_NAME), **twin_record,
            "licence": LICENSE_NAME, "licence_name": LICENCE_SPDX,
            "source": f"{BLAZEFACE.package}=={BLAZEFACE.version}:{BLAZEFACE.member}",
            "input_size": INPUT_SIZE, "min_score": MIN_SCORE, "nms_iou": NMS_IOU, "margin": MARGIN,
            **PRECISION}  # fmt: skip
