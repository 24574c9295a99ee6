"""The hand pipeline's numpy parts (anchors, decoding, NMS, rotated crop, features) and HandTracker on fake models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hands_support import LANDMARKS, LEFT, PALM_PX, build_fake_hand_models

from toolkit.errors import ToolkitError
from toolkit.inference import hands as H
from toolkit.inference.detect import decode, weighted_nms


def test_anchors_are_mediapipe_palm_layout():
    a = H.palm_anchors()
    assert a.shape == (H.NUM_ANCHORS, 2) == (2016, 2)
    # stride 8: a 24x24 grid, 2 anchors per cell, row by row; then stride 16: 12x12, 3 layers x 2 = 6 per cell
    np.testing.assert_allclose(a[0], a[1])
    np.testing.assert_allclose(a[:3], [[0.5 / 24, 0.5 / 24]] * 2 + [[1.5 / 24, 0.5 / 24]])
    np.testing.assert_allclose(a[48], [0.5 / 24, 1.5 / 24])  # second row
    np.testing.assert_allclose(a[1152:1159], [[0.5 / 12, 0.5 / 12]] * 6 + [[1.5 / 12, 0.5 / 12]])
    np.testing.assert_allclose(a[-1], [11.5 / 12, 11.5 / 12])


def test_decode_a_synthetic_raw_tensor():
    anchors = H.palm_anchors()
    raw = np.zeros((1, 2016, 18), np.float32)
    logits = np.full((1, 2016, 1), -30.0, np.float32)
    raw[0, 1620] = [19.2, -9.6, 38.4, 57.6] + [1.92 * k for k in range(14)]
    logits[0, 1620], logits[0, 7] = 1000.0, 0.0  # clipped to 100 before the sigmoid: no overflow, score 1
    scores, boxes, keypoints = decode(raw, logits, anchors, H.PALM_SIZE, 0.5)
    assert scores.tolist() == [0.5, 1.0] and keypoints.shape == (2, 7, 2)  # in anchor order
    cx, cy = anchors[1620] + [0.1, -0.05]
    np.testing.assert_allclose(boxes[1], [cx - 0.1, cy - 0.15, cx + 0.1, cy + 0.15], atol=1e-6)
    np.testing.assert_allclose(keypoints[1, 3], anchors[1620] + [0.06, 0.07], atol=1e-6)
    np.testing.assert_allclose(boxes[0], np.tile(anchors[7], 2))  # a zero regressor: a point on its anchor


def test_weighted_nms_merges_overlaps_and_keeps_the_best_score_first():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.8, 0.8]], np.float32)
    keypoints = np.zeros((3, 7, 2), np.float32)
    keypoints[1] = 1.0
    found = weighted_nms(np.array([0.6, 0.9, 0.7], np.float32), boxes, keypoints, H.NMS_IOU)
    assert [round(d.score, 3) for d in found] == [0.9, 0.7]
    np.testing.assert_allclose(found[0].box, [0.1 + 0.02 * 0.6, 0.1, 0.3 + 0.02 * 0.6, 0.3], atol=1e-6)
    np.testing.assert_allclose(found[0].keypoints, 0.6, atol=1e-6)  # 0.9 / (0.9 + 0.6) of the second's 1.0
    np.testing.assert_allclose(found[1].box, boxes[2])


def test_hand_rect_turns_towards_the_fingers_shifts_squares_and_scales():
    upright = H.hand_rect((100, 100, 140, 160), np.array([[120, 150], [0, 0], [120, 110]] + [[0, 0]] * 4, float))
    assert upright.angle == pytest.approx(0) and upright.side == pytest.approx(60 * H.ROI_SCALE)
    assert (upright.cx, upright.cy) == pytest.approx((120, 130 - 30))  # half the height towards the fingers
    pointing_right = H.hand_rect((0, 0, 50, 50), np.array([[10, 25], [0, 0], [40, 25]] + [[0, 0]] * 4, float))
    assert pointing_right.angle == pytest.approx(math.pi / 2)
    assert (pointing_right.cx, pointing_right.cy) == pytest.approx((25 + 25, 25))


def test_a_point_mapped_into_the_crop_and_back_and_the_crop_samples_there():
    rect = H.Rect(cx=130.0, cy=90.0, side=150.0, angle=0.7)
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 224, (50, 3))
    np.testing.assert_allclose(H.image_to_crop(H.crop_to_image(points, rect), rect), points, atol=1e-9)
    np.testing.assert_allclose(H.crop_to_image(np.array([[112.0, 112.0]]), rect), [[130, 90]])
    # Bilinear sampling is exact on a linear image: the crop's pixel (u, v) holds the image value at the
    # point crop_to_image maps (u, v) to, wherever the rotated square lies inside the image.
    ys, xs = np.mgrid[0:260, 0:300].astype(np.float32)
    image = np.stack([xs / 2, ys / 2, (xs + ys) / 4], -1)
    crop = H.warp(image, *rect.axes(224), 224, replicate=True)
    u, v = rng.integers(60, 164, (2, 40))
    where = H.crop_to_image(np.stack([u, v], 1).astype(float), rect)
    np.testing.assert_allclose(crop[v, u, 0], where[:, 0] / 2, atol=1e-3)
    np.testing.assert_allclose(crop[v, u, 1], where[:, 1] / 2, atol=1e-3)
    # Outside the image: zero border for the palm detector, replicated border for the landmark model
    far = H.Rect(cx=0.0, cy=0.0, side=100.0, angle=0.0)
    assert H.warp(image, *far.axes(10), 10, replicate=False)[0, 0].tolist() == [0, 0, 0]
    assert H.warp(image, *far.axes(10), 10, replicate=True)[0, 0].tolist() == [0, 0, 0] != image[0, 1].tolist()
    assert H.warp(image, *far.axes(10), 10, replicate=True)[0, 9, 0] == pytest.approx(40 / 2)


def _hand(points, handedness="right"):
    return H.Hand(np.asarray(points, np.float32), 0.9, handedness, 0.9)


def test_features_ignore_position_and_size_and_mirror_left_hands():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 100, (21, 3))
    f = H.features(_hand(points))
    assert f.shape == (63,) and f.dtype == np.float32
    assert np.all(f[:3] == 0) and np.hypot(*f.reshape(21, 3)[H.MIDDLE_MCP, :2]) == pytest.approx(1)
    moved = points * 3.5 + [40, -7, 0]
    moved[:, 2] = points[:, 2] * 3.5
    np.testing.assert_allclose(H.features(_hand(moved)), f, atol=1e-5)
    mirrored = points * [-1, 1, 1] + [300, 0, 0]
    np.testing.assert_allclose(H.features(_hand(mirrored, "left")), f, atol=1e-5)
    assert not np.allclose(H.features(_hand(mirrored, "right")), f, atol=1e-3)
    assert np.isfinite(H.features(_hand(np.zeros((21, 3))))).all()  # a degenerate hand: no division by zero


def test_tracker_on_fake_models_finds_projects_and_refuses(tmp_path):
    palm, landmark = build_fake_hand_models(tmp_path)
    tracker = H.HandTracker(palm, landmark)
    assert tracker.track(np.zeros((192, 384, 3), np.uint8)) is None  # dark: no palm
    hand = tracker.track(np.full((192, 384, 3), 230, np.uint8))
    assert hand is not None and hand.handedness == "left" and hand.handedness_score == pytest.approx(LEFT)
    # the palm detector's input is half frame, half a zero (black) letterbox border
    assert hand.palm_score == pytest.approx(1 / (1 + math.exp(-(20 * 0.5 * 230 / 255 - 5))), rel=1e-4)
    assert hand.score == pytest.approx(230 / 255, rel=1e-3)  # presence: the crop's mean (replicated border)
    # The 384-wide frame is letterboxed into a 384 square starting 96 px above it; the palm is an upright
    # PALM_PX/192 of that square on the anchor, the crop 2.6 times its side, shifted half a side up.
    side = 384 / 192
    cx, cy = 6.5 / 12 * 384, 6.5 / 12 * 384 - 96 - PALM_PX * side / 2
    crop_side = PALM_PX * side * H.ROI_SCALE
    assert (hand.rect.cx, hand.rect.cy, hand.rect.side) == pytest.approx((cx, cy, crop_side), rel=1e-5)
    want = np.stack([cx + crop_side * (LANDMARKS[:, 0] / 224 - 0.5), cy + crop_side * (LANDMARKS[:, 1] / 224 - 0.5),
                     LANDMARKS[:, 2] / H.NORMALIZE_Z * crop_side / 224], 1)  # fmt: skip
    np.testing.assert_allclose(hand.points, want, rtol=1e-4, atol=1e-3)
    assert hand.points.dtype == np.float32 and hand.points.shape == (21, 3)
    assert H.HandTracker(palm, landmark, min_score=0.95).track(np.full((192, 384, 3), 230, np.uint8)) is None
    with pytest.raises(ToolkitError, match="expected an HxWx3"):
        tracker.track(np.zeros((10, 10), np.uint8))
    with pytest.raises(ToolkitError, match="not MediaPipe's palm detector"):
        H.HandTracker(landmark, landmark)
    with pytest.raises(ToolkitError, match="file not found"):
        H.HandTracker(tmp_path / "nothing.onnx", landmark)


@pytest.mark.parametrize("opencv", [True, False], ids=["opencv", "pillow+numpy"])
def test_the_fast_crops_sample_what_warp_samples_at_the_frame_edges_too(opencv, monkeypatch):
    from toolkit.inference import detect

    if opencv and detect.opencv() is None:
        pytest.skip("OpenCV is not installed (the base install): the Pillow and numpy crops serve")
    monkeypatch.setattr(detect, "_OPENCV", detect.opencv() if opencv else False)
    rng = np.random.default_rng(3)
    from PIL import Image, ImageFilter

    noise = Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(2))
    image = np.asarray(noise)
    # The letterbox: the same samples as warp (zero outside the image), for wide, tall and square images; the
    # sums in another order round a value on the .5 the other way now and then.
    for shape in ((120, 160), (160, 120), (100, 100), (37, 90)):
        img = np.ascontiguousarray(image[: shape[0], : shape[1]]) if shape[0] <= 120 else np.ascontiguousarray(
            np.concatenate([image, image])[: shape[0], : shape[1]])  # fmt: skip
        corner, side = H.letterbox_axes(*shape)
        step = side / H.PALM_SIZE
        want = H.warp(img, corner, np.array([step, 0.0]), np.array([0.0, step]), H.PALM_SIZE, replicate=False)
        got, got_corner, got_side = H.letterbox_sample(img)
        assert got_side == side and np.array_equal(got_corner, corner)
        diff = np.abs(got[0] * 255 - want)
        # OpenCV places samples on a 1/32 px grid with fixed-point weights, as inside MediaPipe
        assert diff.max() <= (4 if opencv else 1) + 1e-3 and (diff > 1e-3).mean() < (0.15 if opencv else 0.01), shape
    # The landmark crop: within a grey level or two of warp, inside, across and beyond the border (replicated), at
    # any rotation (OpenCV's fixed-point weights; Pillow truncates where warp rounds, so it is never higher).
    for rect in (H.Rect(80, 60, 70, 0.3), H.Rect(5, 110, 90, -2.1), H.Rect(150, 5, 60, 1.2), H.Rect(80, 60, 400, 0.7)):
        want = H.warp(image, *rect.axes(H.LANDMARK_SIZE), H.LANDMARK_SIZE, replicate=True)
        got = H.crop(image, *rect.axes(H.LANDMARK_SIZE), H.LANDMARK_SIZE, replicate=True).astype(np.float32)
        diff = want - got
        assert diff.max() <= (4 if opencv else 1) and diff.min() >= (-4 if opencv else -1e-3), rect
