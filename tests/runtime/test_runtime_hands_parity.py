"""The toolkit's hand pipeline against MediaPipe 0.10.21's own Hands solution (tests/fixtures/hands_parity.json).

Needs the real models (see hands_support.real_hand_models: the weights cache, where .ci/run puts the wheel, or
the wheel via $TOOLKIT_MEDIAPIPE_WHEEL); skipped without them, never the network. The photos are committed in
tests/fixtures/hands_parity/ (12 of the Sign Language Digits Dataset, Apache-2.0: see its README.md).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hands_support import real_hand_models

from toolkit.inference.hands import HandTracker
from toolkit.inference.litert import litert_available

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

from make_hands_parity import prepare  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "hands_parity.json"
SIGNS = ROOT / "tests" / "fixtures" / "hands_parity"  # the fixture's photos, as DIGIT/IMG_####.JPG
# Worst x/y error measured: 0.76 px on a 256 px image (OpenCV's fixed-point bilinear and XNNPACK's float
# order are not reproduced bit for bit); a wrong anchor, rotation or crop convention costs several pixels.
TOLERANCE_PX = 1.5


@pytest.mark.parametrize("runtime", ["onnxruntime", "litert"])
def test_landmarks_match_mediapipe_on_sign_digits(runtime):
    """The ONNX files under onnxruntime, and the wheel's own .tflite files under LiteRT (what the door runs)."""
    models = real_hand_models()
    if models is None:
        pytest.skip("no hand models: set TOOLKIT_MEDIAPIPE_WHEEL to mediapipe 0.10.21's wheel, or convert them once")
    twins = None
    if runtime == "litert":
        twins = {"palm": models[0].parent / "palm_detection_full.tflite", "landmark": models[1].with_suffix(".tflite")}
        if not litert_available() or not all(p.is_file() for p in twins.values()):
            pytest.skip("no ai-edge-litert or no .tflite files beside the ONNX")
    tracker = HandTracker(*models, twins=twins)
    assert (tracker.palm.runtime, tracker.landmark.runtime) == (runtime, runtime)
    fixture = json.loads(FIXTURE.read_text())
    worst, where = 0.0, ""
    for record in fixture["photos"]:
        rgb = prepare(SIGNS / record["photo"], record["variant"])
        assert hashlib.sha256(rgb.tobytes()).hexdigest() == record["input_sha256"], \
            f"{record['photo']}: not the fixture's input (another Pillow resize?)"  # fmt: skip
        hand = tracker.track(rgb)
        assert hand is not None, record["photo"]
        want = np.array(record["hand"]["points"])
        err = float(np.abs(hand.points[:, :2] - want[:, :2]).max())
        if err > worst:
            worst, where = err, f"{record['photo']} {record['variant']}".strip()
        assert hand.handedness == record["hand"]["handedness"]
        assert hand.handedness_score == pytest.approx(record["hand"]["handedness_score"], abs=0.01)
        assert np.abs(hand.points[:, 2] - want[:, 2]).max() < 2 * TOLERANCE_PX  # z: relative depth, same scale
    print(f"\nhands parity ({runtime}): worst landmark error {worst:.2f} px ({where}) over "
          f"{len(fixture['photos'])} inputs, mediapipe {fixture['mediapipe']}")
    assert worst < TOLERANCE_PX
