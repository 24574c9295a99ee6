"""MediaPipe's hand pipeline (palm detector, then 21 landmarks) with numpy and onnxruntime only.

The two ONNX files are ``palm_detection_full.tflite`` and ``hand_landmark_full.tflite`` of the mediapipe
0.10.21 wheel converted by :mod:`toolkit.models.hands`. Everything between them follows the options of
MediaPipe's own graphs, so the points match the mediapipe package's (``tests/fixtures/hands_parity.json``):

- ``palm_detection_cpu.pbtxt``: the image letterboxed into 192x192 (zero border), values in [0, 1]; 2016 SSD
  anchors (4 layers, strides 8/16/16/16, offset 0.5, fixed size); boxes and 7 keypoints decoded with scale 192;
  logits clipped to +-100 before the sigmoid, kept at >= 0.5; weighted NMS at IoU 0.3.
- ``palm_detection_detection_to_roi.pbtxt``: the hand rectangle turned so that the wrist (palm keypoint 0)
  lies below the middle finger's knuckle (keypoint 2), shifted by half its height towards the fingers, squared
  on its long side and scaled by 2.6.
- ``hand_landmark_cpu.pbtxt``: that rectangle cropped to 224x224 (border pixels replicated), values in [0, 1];
  outputs 21 (x, y, z) in crop pixels (z divided by 0.4 more), the hand presence and P(left), then projected
  back into the image.

Both crops (:mod:`toolkit.inference.handcrops`) map the rectangle's corners onto the crop's corners with pixel
centres on integer coordinates, as OpenCV's warpPerspective does inside MediaPipe; sampling is bilinear.
Handedness is MediaPipe's label, which assumes a mirrored (selfie) image; it matters here only as "mirror the
points of one of the two kinds".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.inference.detect import Detection, decode, ssd_anchors, weighted_nms
from toolkit.inference.handcrops import (  # noqa: F401 (the crops are part of this module's interface)
    PALM_SIZE,
    crop,
    letterbox_axes,
    letterbox_sample,
    palm_sample,
    palm_view,
    sample,
    turned_views,
    warp,
    zoomed_letterbox,
)
from toolkit.inference.handfeatures import (
    FEATURE_VERSION,  # noqa: F401 (bump it there when track() or features() change their numbers)
    FeatureSpec,
    hand_vector,
)

LANDMARK_SIZE = 224
STRIDES = (8, 16, 16, 16)
ANCHORS_PER_LAYER = 2  # one aspect ratio + one interpolated scale
NUM_ANCHORS = 2016  # 24x24x2 + 12x12x6
NUM_KEYPOINTS = 7
NMS_IOU = 0.3
MIN_SCORE = 0.5  # palm score and hand presence (MediaPipe's min_detection_confidence and its fixed 0.5)
ROI_SCALE = 2.6
ROI_SHIFT_Y = -0.5
WRIST_KEYPOINT, MIDDLE_KEYPOINT = 0, 2  # the palm detector's keypoints that give the hand's rotation
NORMALIZE_Z = 0.4
NUM_POINTS = 21
MIDDLE_MCP = 9  # the landmark that sets the scale (and the upright direction) of features()


@dataclass(frozen=True)
class Rect:
    """A rotated square in image pixels: centre, side, rotation in radians (MediaPipe's NormalizedRect)."""

    cx: float
    cy: float
    side: float
    angle: float

    def axes(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(origin, step along crop x, step along crop y): crop pixel (u, v) is image ``origin + u*ex + v*ey``."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        ex = np.array([c, s], dtype=np.float64) * self.side / size
        ey = np.array([-s, c], dtype=np.float64) * self.side / size
        origin = np.array([self.cx, self.cy]) - (ex + ey) * size / 2
        return origin, ex, ey


@dataclass(frozen=True)
class Hand:
    """One hand: ``points`` (21, 3) float32 image pixels (x, y, z relative to the wrist, same scale as x)."""

    points: np.ndarray
    score: float  # hand presence from the landmark model
    handedness: str  # "left" | "right", MediaPipe's label
    palm_score: float
    handedness_score: float = 1.0  # MediaPipe's score of that label
    rect: Rect | None = None  # the crop the landmark model saw


def palm_anchors() -> np.ndarray:
    """The palm detector's 2016 anchor centres (N, 2), normalised, in its output order."""
    return ssd_anchors(PALM_SIZE, STRIDES, ANCHORS_PER_LAYER)


def normalize_radians(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def hand_rect(box: tuple, keypoints: np.ndarray) -> Rect:
    """The landmark model's crop for a palm (box x0 y0 x1 y1 and keypoints in image pixels).

    DetectionsToRectsCalculator (rotation, target 90 degrees) then RectTransformationCalculator (shift, square
    on the long side, scale), computed in pixels.
    """
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    (ax, ay), (bx, by) = keypoints[WRIST_KEYPOINT], keypoints[MIDDLE_KEYPOINT]
    angle = normalize_radians(math.pi / 2 - math.atan2(-(by - ay), bx - ax))
    cx = (x0 + x1) / 2 - h * ROI_SHIFT_Y * math.sin(angle)
    cy = (y0 + y1) / 2 + h * ROI_SHIFT_Y * math.cos(angle)
    return Rect(float(cx), float(cy), float(max(w, h) * ROI_SCALE), float(angle))


def crop_to_image(points: np.ndarray, rect: Rect, size: int = LANDMARK_SIZE) -> np.ndarray:
    """(N, 2 or 3) crop pixels -> image pixels (LandmarkProjectionCalculator); z is scaled like x."""
    origin, ex, ey = rect.axes(size)
    out = np.array(points, dtype=np.float64)
    out[:, :2] = origin + out[:, :1] * ex + out[:, 1:2] * ey
    if out.shape[1] > 2:
        out[:, 2] *= rect.side / size
    return out


def image_to_crop(points: np.ndarray, rect: Rect, size: int = LANDMARK_SIZE) -> np.ndarray:
    """The inverse of :func:`crop_to_image`."""
    origin, ex, ey = rect.axes(size)
    out = np.array(points, dtype=np.float64)
    d = out[:, :2] - origin
    step = rect.side / size
    out[:, 0], out[:, 1] = d @ ex / step**2, d @ ey / step**2
    if out.shape[1] > 2:
        out[:, 2] /= step
    return out


def _session(path: str | Path, threads: int, what: str, twin: str | Path | None = None, mediapipe: bool = True):
    """The model's session: its ``.tflite`` twin under LiteRT or the ONNX under onnxruntime
    (:func:`toolkit.inference.litert.open_model`)."""
    from toolkit.inference.litert import open_model

    return open_model(path, threads, what, twin, mediapipe)


def _check(session, path, size: int, outputs: list[tuple], what: str) -> None:
    shape = tuple(session.get_inputs()[0].shape)[1:]
    got = [tuple(o.shape)[1:] for o in session.get_outputs()]
    if shape != (size, size, 3) or got != outputs:
        raise ToolkitError(f"{path}: not MediaPipe's {what} (input {shape}, outputs {got})")


class HandTracker:
    """The most confident hand of an RGB image, as MediaPipe's Hands solution finds it (static images).

    Args:
        palm: the palm detector ONNX. landmark: the hand landmark ONNX.
        threads: threads for each model.
        min_score: lowest palm score and hand presence accepted.
        twins: {"palm" | "landmark": the model's ``.tflite``} for LiteRT to run instead of the ONNX
            (:mod:`toolkit.inference.litert`); each session's ``runtime`` says which ran.

    Raises:
        ToolkitError: a file is missing, not ONNX, or not of the expected model.
    """

    def __init__(self, palm: Path, landmark: Path, threads: int = 1, min_score: float = MIN_SCORE,
                 twins: dict | None = None) -> None:  # fmt: skip
        twins = twins or {}
        self.palm = _session(palm, threads, "palm detector", twins.get("palm"))
        _check(self.palm, palm, PALM_SIZE, [(NUM_ANCHORS, 4 + 2 * NUM_KEYPOINTS), (NUM_ANCHORS, 1)], "palm detector")
        self.landmark = _session(landmark, threads, "hand landmark model", twins.get("landmark"))
        _check(self.landmark, landmark, LANDMARK_SIZE, [(3 * NUM_POINTS,), (1,), (1,), (3 * NUM_POINTS,)],
               "hand landmark model")  # fmt: skip
        self._palm_input = self.palm.get_inputs()[0].name
        self._landmark_input = self.landmark.get_inputs()[0].name
        self.anchors = palm_anchors()
        self.min_score = min_score
        # A logit this far below the score threshold's cannot reach it through decode's float32 sigmoid: a frame
        # whose best anchor is below it has no palm, without decoding the 2016 anchors.
        self._skip_below = math.log(min_score / (1 - min_score)) - 1e-3 if 0 < min_score < 1 else -math.inf

    def palms(self, image: np.ndarray, zoom: float = 0.0, degrees: float = 0.0) -> list[Detection]:
        """Palm detections (score, box, 7 keypoints) in image pixels, best first, in :func:`palm_view`'s view.

        A turned view's box is the detector's own (its width and height as the detector saw them) about its centre
        mapped back into the image: :func:`hand_rect` reads only that centre, width and height.
        """
        x, origin, ex, ey = palm_sample(image, zoom, degrees)
        reg, logits = self.palm.run(None, {self._palm_input: x})
        if float(logits.max()) < self._skip_below:  # most frames at a door: no anchor near the threshold
            return []
        found = weighted_nms(*decode(reg, logits, self.anchors, PALM_SIZE, self.min_score), NMS_IOU)
        out = []
        side = float(np.hypot(*ex)) * PALM_SIZE if degrees else zoomed_letterbox(*image.shape[:2], zoom)[1]
        for d in found:
            box = np.array(d.box, np.float64).reshape(2, 2)
            if not degrees:  # as before the views could turn: the same numbers, bit for bit
                box = box * side + origin
                out.append(Detection(d.score, tuple(float(v) for v in box.reshape(-1)), d.keypoints * side + origin))
                continue
            to_image = np.stack([ex, ey]) * PALM_SIZE  # normalised view (u, v) -> image offset from origin
            centre = origin + box.mean(0) @ to_image
            half = (box[1] - box[0]) * side / 2
            keypoints = origin + np.asarray(d.keypoints, np.float64) @ to_image
            out.append(Detection(d.score, (*(centre - half), *(centre + half)), keypoints))
        return out

    def landmarks(self, image: np.ndarray, rect: Rect) -> tuple[np.ndarray, float, float]:
        """(21 points in image pixels, presence, P(left)) of the hand in ``rect``."""
        x = sample(image, *rect.axes(LANDMARK_SIZE), LANDMARK_SIZE, replicate=True)
        points, presence, left, _ = self.landmark.run(None, {self._landmark_input: x})
        raw = points.reshape(NUM_POINTS, 3).astype(np.float64)
        raw[:, 2] /= NORMALIZE_Z
        return crop_to_image(raw, rect).astype(np.float32), float(presence.reshape(-1)[0]), float(left.reshape(-1)[0])

    def track(self, image: np.ndarray, zoom: float = 0.0, degrees: float = 0.0) -> Hand | None:
        """The most confident hand of an HxWx3 RGB image (uint8, or float 0-255) of any size, or None.

        ``zoom``, ``degrees``: the palm detector's view (:func:`palm_view`); the landmark model reads the image
        itself, its border replicated.

        Raises:
            ToolkitError: not an HxWx3 image.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] < 3 or min(image.shape[:2]) < 1:
            raise ToolkitError(f"hand tracker: expected an HxWx3 RGB image, got shape {image.shape}")
        found = self.palms(image, zoom, degrees)
        if not found:
            return None
        best = found[0]  # MediaPipe keeps the first palm after NMS (max_num_hands=1): the best score
        rect = hand_rect(best.box, best.keypoints)
        points, presence, left = self.landmarks(image, rect)
        if presence < self.min_score:
            return None
        label, label_score = ("left", left) if left >= 0.5 else ("right", 1.0 - left)
        return Hand(points, presence, label, best.score, label_score, rect)


def features(hand: Hand, spec=None) -> np.ndarray:
    """(spec.dim,) float32: the hand's features as :mod:`toolkit.inference.handfeatures` computes them (default:
    the 63 points relative to the wrist, scaled, left hands mirrored, turned so the hand points up): the same
    numbers for the same sign wherever it is in the image, whatever its size and angle, whichever hand makes it."""
    return hand_vector(hand.points, hand.handedness == "left", spec or FeatureSpec())
