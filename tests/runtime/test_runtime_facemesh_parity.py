"""The toolkit's face mesh against MediaPipe 0.10.21's own FaceMesh (tests/fixtures/facemesh_parity.json).

Needs the real models (facemesh_support.real_face_mesh: the weights cache, or converted once from the wheel);
skipped without them, never the network. The photo is scikit-image's public-domain astronaut
(tests/fixtures/facemesh_parity/README.md), in 7 variants: mirrored, turned, zoomed, stretched, and as a
~25 px face upscaled into a 640x480 grey door frame.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from facemesh_support import real_face_mesh

from toolkit.inference.detect import FaceDetector
from toolkit.inference.facemesh import FaceMesh, features
from toolkit.inference.litert import litert_available

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

from make_facemesh_parity import prepare  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "facemesh_parity.json"
PHOTOS = ROOT / "tests" / "fixtures" / "facemesh_parity"
# Worst x/y error measured (docs/face-landmarks.md): 0.92 px on the photos, 2.81 px on the door frame, where the
# detector sees the 640x480 frame through Pillow's antialiased resize to 128 px, not MediaPipe's plain bilinear
# warp (with that warp it was 1.74 px), so its box and the landmark crop differ a little. A wrong rotation,
# scale or crop convention costs several pixels.
TOLERANCE_PX = 1.5
DOOR_TOLERANCE_PX = 3.0


@pytest.fixture(scope="module", params=["onnxruntime", "litert"])
def mesh(request):
    """The ONNX files under onnxruntime, and the wheel's own .tflite files under LiteRT (what the door runs)."""
    models = real_face_mesh()
    if models is None:
        pytest.skip("no face mesh: set TOOLKIT_MEDIAPIPE_WHEEL to mediapipe 0.10.21's wheel, or convert it once")
    detector, landmark = models
    twins = {"detector": None, "landmark": None}
    if request.param == "litert":
        twins = {"detector": landmark.with_name("face_detection_short_range.tflite"),
                 "landmark": landmark.with_suffix(".tflite")}
        if not litert_available() or not all(p.is_file() for p in twins.values()):
            pytest.skip("no ai-edge-litert or no .tflite files beside the ONNX")
    out = FaceMesh(landmark, FaceDetector(detector, twin=twins["detector"]), twin=twins["landmark"])
    assert (out.session.runtime, out.detector.session.runtime) == (request.param, request.param)
    return out


def test_landmarks_match_mediapipe_on_the_astronaut(mesh):
    fixture = json.loads(FIXTURE.read_text())
    worst, where, errors = {}, {}, []
    for record in fixture["photos"]:
        rgb = prepare(PHOTOS, record["variant"])
        assert hashlib.sha256(rgb.tobytes()).hexdigest() == record["input_sha256"], \
            f"{record['variant']!r}: not the fixture's input (another Pillow resize?)"  # fmt: skip
        face = mesh.track(rgb)
        assert face is not None, record["variant"]
        assert face.score >= 0.5
        want = np.array(record["face"]["points"])
        err = np.abs(face.points[:, :2] - want[:, :2]).max(axis=1)
        errors.append(float(np.median(err)))
        kind = "door" if record["variant"] == "door" else "photo"
        if err.max() > worst.get(kind, 0.0):
            worst[kind], where[kind] = float(err.max()), record["variant"] or "plain"
        # z: relative depth on x's scale; its zero (the face's centre of mass) is the model's, so compare shape
        dz = (face.points[:, 2] - face.points[:, 2].mean()) - (want[:, 2] - want[:, 2].mean())
        assert np.abs(dz).max() < 2 * TOLERANCE_PX, record["variant"]
    print(f"\nface mesh parity ({mesh.session.runtime}): worst landmark error {worst['photo']:.2f} px on the "
          f"photos ({where['photo']}), "
          f"{worst['door']:.2f} px on the door frame; median point error per input {np.median(errors):.2f} px; "
          f"{len(fixture['photos'])} inputs, mediapipe {fixture['mediapipe']}")
    assert worst["photo"] < TOLERANCE_PX and worst["door"] < DOOR_TOLERANCE_PX


def test_features_ignore_position_roll_and_scale(mesh):
    """The same face, mirrored-free variants: turned, zoomed, moved into a frame -> nearly the same features."""
    base = features(mesh.track(prepare(PHOTOS, "")))
    for variant in ("rot20", "rot-35", "zoom"):
        other = features(mesh.track(prepare(PHOTOS, variant)))
        # units: outer-eye-corner distances. The mesh is not exactly equivariant, and the ROI follows the
        # detector's keypoints: 0.023 at -35 deg with the letterbox MediaPipe uses (0.018 with the old one)
        assert np.abs(other - base).mean() < 0.03, variant
    eyes = base.reshape(-1, 3)[[33, 263]]
    assert eyes[0, 1] == pytest.approx(eyes[1, 1], abs=1e-5)  # levelled
    assert np.hypot(*(eyes[1, :2] - eyes[0, :2])) == pytest.approx(1.0, abs=1e-5)  # scaled
    assert np.abs(base.reshape(-1, 3)[1]).max() < 1e-6  # centred on the nose tip


def test_no_face_is_none_not_a_guess(mesh):
    grey = np.full((240, 320, 3), 90, np.uint8)
    assert mesh.track(grey) is None


@pytest.mark.parametrize("with_opencv", [True, False])
def test_fast_warp_is_the_numpy_warp_within_a_grey_level(with_opencv, monkeypatch):
    """The fast crop (OpenCV's warp, or Pillow's without OpenCV) samples where toolkit.inference.hands.warp does,
    border replicated, inside and outside."""
    from PIL import Image

    from toolkit.inference import detect
    from toolkit.inference.facemesh import warp

    if with_opencv and detect.opencv() is None:
        pytest.skip("OpenCV not installed")
    monkeypatch.setattr(detect, "_OPENCV", None if with_opencv else False)
    from toolkit.inference.hands import Rect
    from toolkit.inference.hands import warp as numpy_warp

    rng = np.random.default_rng(0)
    image = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((160, 120)))
    for rect in (Rect(80, 60, 70, 0.3), Rect(10, 8, 60, -0.7), Rect(150, 115, 40, 2.0), Rect(80, 60, 200, 0.0)):
        want = numpy_warp(image, *rect.axes(48), 48, replicate=True)
        got = warp(image, rect, 48)
        assert got.shape == (48, 48, 3) and got.dtype == np.uint8
        assert np.abs(got - want).max() <= 1.0, rect
