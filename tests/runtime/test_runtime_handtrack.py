"""Following a hand across frames (toolkit.inference.handtrack): the rule for losing and re-finding it.

The geometry is checked on synthetic points; the rule on a moving sequence with the real models (a committed
parity photo moving across a 640x480 frame; skipped without the models, see hands_support.real_hand_models).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hands_support import real_hand_models

from toolkit.inference.hands import HandTracker
from toolkit.inference.handtrack import HandStream, landmarks_rect, views

PHOTO = Path(__file__).resolve().parents[1] / "fixtures" / "hands_parity" / "5" / "IMG_1123.JPG"
BACKGROUND = 90


def upright_hand(cx=300.0, cy=200.0, size=100.0) -> np.ndarray:
    """21 points of an upright hand: wrist at the bottom, knuckles above it, fingers further up."""
    pts = np.zeros((21, 3))
    pts[:, 0] = cx + np.linspace(-0.4, 0.4, 21) * size
    pts[:, 1] = cy + np.linspace(0.5, -0.5, 21) * size
    pts[0, :2] = cx, cy + 0.5 * size
    pts[[5, 9, 13], 0] = cx - 0.2 * size, cx, cx + 0.2 * size
    pts[[5, 9, 13], 1] = cy
    return pts


def test_the_next_crop_is_upright_for_an_upright_hand_and_turns_with_it():
    rect = landmarks_rect(upright_hand())
    assert rect.angle == pytest.approx(0.0)
    sub = upright_hand()[[0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18], :2]
    w, h = np.ptp(sub, 0)
    assert rect.side == pytest.approx(2.0 * max(w, h))
    assert rect.cx == pytest.approx((sub[:, 0].max() + sub[:, 0].min()) / 2)
    assert rect.cy == pytest.approx((sub[:, 1].max() + sub[:, 1].min()) / 2 - 0.1 * h)  # towards the fingers
    # The same hand turned by 40 degrees about (300, 200): the crop turns and moves with it, the same size.
    a = math.radians(40)
    turn = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = upright_hand()
    pts[:, :2] = (pts[:, :2] - [300, 200]) @ turn.T + [300, 200]
    turned = landmarks_rect(pts)
    assert turned.angle == pytest.approx(a)
    assert turned.side == pytest.approx(rect.side)
    np.testing.assert_allclose([turned.cx, turned.cy], turn @ ([rect.cx, rect.cy] - np.array([300, 200])) + [300, 200])


@pytest.fixture(scope="module")
def tracker():
    models = real_hand_models()
    if models is None:
        pytest.skip("no hand models: set TOOLKIT_MEDIAPIPE_WHEEL to mediapipe 0.10.21's wheel, or convert them once")
    return HandTracker(*models)


def frame(x: int, y: int, side: int = 200) -> np.ndarray:
    from PIL import Image

    with Image.open(PHOTO) as img:
        photo = np.asarray(img.convert("RGB").resize((side, side), Image.Resampling.BILINEAR))
    out = np.full((480, 640, 3), BACKGROUND, np.uint8)
    out[y : y + side, x : x + side] = photo
    return out


def test_a_moving_hand_is_followed_lost_and_found_again(tracker):
    stream = HandStream(tracker, zoom_out=0.5)
    # Moving ~2 px a frame: the palm detector runs once, then the landmarks carry the hand.
    for i in range(6):
        f = frame(100 + 2 * i, 120 + i)
        hand, alone = stream.track(f), tracker.track(f)
        assert hand is not None and alone is not None
        # within what MediaPipe's own video and static modes differ by (~1.2 px mean on such frames)
        assert np.abs(hand.points[:, :2] - alone.points[:, :2]).mean() < 1.5, i
    assert stream.detections == 1
    # The hand leaves: no hand, never the last frame's hand; each empty frame looks again (one palm pass each:
    # plain, then zoomed out, then plain).
    empty = np.full((480, 640, 3), BACKGROUND, np.uint8)
    assert [stream.track(empty) for _ in range(3)] == [None] * 3
    assert stream.detections == 4 and stream.rect is None
    # It comes back elsewhere: found in that same frame.
    assert stream.track(frame(400, 200)) is not None and stream.detections == 5
    # It jumps further than its crop reaches: lost from the old crop, re-found by the palm detector at once.
    jumped = stream.track(frame(20, 20))
    assert jumped is not None and stream.detections == 6
    assert abs(jumped.rect.cx - 120) < 60 and abs(jumped.rect.cy - 120) < 60
    # A frame of another size forgets the hand.
    stream.track(frame(20, 20)[:400])
    assert stream.detections == 7


def test_frames_without_a_hand_cost_one_palm_pass_each_cycling_through_the_views():
    """Rule 3: plain on even frames; the zoomed-out view every fourth frame, the turned views in between."""
    seen = []

    class Tracker:
        def palms(self, image, zoom=0.0, degrees=0.0):
            seen.append((zoom, degrees))
            return []

    stream = HandStream(Tracker(), zoom_out=0.5, turns=(30.0, -30.0))
    empty = np.zeros((48, 64, 3), np.uint8)
    for _ in range(17):
        assert stream.track(empty) is None
    plain, zoom = (0.0, 0.0), (0.5, 0.0)
    assert seen[0::2] == [plain] * 9
    assert seen[1::2] == [zoom, (0.0, 30.0), zoom, (0.0, -30.0), zoom, (0.5, 30.0), zoom, (0.5, -30.0)]
    assert views(0.5, ()) == [plain, zoom] and views(0.0, ()) == [plain]  # as before the turned views
    assert views(0.0, (30.0,)) == [plain, (0.0, 30.0)]


def test_a_turned_view_finds_the_same_hand_in_the_image_s_own_pixels(tracker):
    """The palm detector's view turned by 30 degrees: its palm and the landmarks read from it land where the
    plain view's do (a mapping back into the image gone wrong would put them tens of pixels away)."""
    f = frame(220, 140)
    plain, turned = tracker.palms(f)[0], tracker.palms(f, 0.0, 30.0)[0]
    assert np.abs(np.asarray(turned.keypoints) - plain.keypoints).max() < 12
    a, b = tracker.track(f), tracker.track(f, degrees=-30.0)
    assert a is not None and b is not None
    assert np.abs(a.points[:, :2] - b.points[:, :2]).mean() < 3.0
    # zoomed out without a copy: the same detections as the framed picture's, moved back into the frame
    framed = np.zeros((960, 1280, 3), np.uint8)
    framed[240:720, 320:960] = f
    want, got = tracker.palms(framed)[0], tracker.palms(f, 0.5)[0]
    np.testing.assert_allclose(np.asarray(got.keypoints), np.asarray(want.keypoints) - [320, 240], atol=1e-6)
