"""MediaPipe's face mesh (468 landmarks) from a BlazeFace detection, with numpy and onnxruntime only.

The landmark model is ``face_landmark.tflite`` of the mediapipe 0.10.21 wheel converted by
:mod:`toolkit.models.facemesh`; the detection comes from the door's own :class:`~toolkit.inference.detect.
FaceDetector`, so one detector pass per frame feeds both the landmarks and the face box. Between them, the
options of MediaPipe's face-mesh graphs (facts, checked by ``tests/fixtures/facemesh_parity.json``):

- ``face_detection_front_detection_to_roi.pbtxt``: the detection box turned so that the line from keypoint 0
  to keypoint 1 (the eyes) is level (target angle 0), squared on its long side and scaled by 1.5, no shift;
- ``face_landmark_cpu.pbtxt``: that square cropped to 192x192 (bilinear, border replicated), values in [0, 1];
  outputs 468 (x, y, z) in crop pixels (z on x's scale) and a face-presence logit; a face counts when its
  sigmoid is >= 0.5 (FaceMesh's default); the points are projected back into the image.

:func:`features` makes the points mean the same on every camera (position, roll and scale removed), and
:func:`aligned_crop` cuts the face square and level for the expression CNN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.errors import ToolkitError
from toolkit.inference.detect import Detection, opencv
from toolkit.inference.hands import Rect, _check, _session, crop_to_image, normalize_radians

LANDMARK_SIZE = 192
NUM_POINTS = 468
ROI_SCALE = 1.5
MIN_PRESENCE = 0.5
EYE_KEYPOINTS = (0, 1)  # BlazeFace keypoints whose line gives the face's roll (the eyes)
NOSE_TIP = 1  # mesh points used by features(): centre,
EYE_CORNERS = (33, 263)  # and the outer eye corners (image-left first on a frontal face): roll and scale
# The aligned crop for the expression CNN: the mesh's extent squared and scaled by this (the mesh spans brow to
# chin; a little room keeps the face's outline, as in the face datasets the CNN was trained on).
CROP_SCALE = 1.2
CROP_SIZE = 64  # the fer CNN's input
# Bump when track(), features() or aligned_crop() change their numbers: the feature cache key includes it.
# facemesh-2: crops by OpenCV's warp where installed (vs Pillow's: points 0.28 px median apart, P(smile) 0.005
# mean and 0.06 at most on 78 smiles faces clean and door-shifted, no answer changed).
FEATURE_VERSION = "facemesh-2"


@dataclass(frozen=True)
class Face:
    """One face: ``points`` (468, 3) float32 image pixels (z on x's scale), the presence and the detection."""

    points: np.ndarray
    score: float  # presence sigmoid from the landmark model
    detection: Detection  # the BlazeFace detection the landmark crop came from (box in image pixels)
    rect: Rect  # the crop the landmark model saw

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The detector's face box (x0, y0, x1, y1), image pixels: what the door's page draws."""
        return self.detection.box


def warp(image: np.ndarray, rect: Rect, size: int) -> np.ndarray:
    """Bilinear ``size`` x ``size`` uint8 crop of ``rect`` (corners onto corners, pixel centres on integers,
    border replicated): within one grey level of :func:`toolkit.inference.hands.warp` and several times faster
    (the door's frame budget).

    With OpenCV (``.[door]`` and training have it) by its affine warp, as MediaPipe crops; without it (the base
    install) by Pillow's affine transform, handed only the rectangle's bounding box: where that leaves the image
    its rows and columns are the border's, replicated (Pillow itself fills with black).
    """
    h, w = image.shape[:2]
    origin, ex, ey = rect.axes(size)
    cv2 = opencv()
    if cv2 is not None:  # MediaPipe's own crop (its bilinear warp, fixed point, border replicated), ~4x faster
        inverse = np.array([[ex[0], ey[0], origin[0]], [ex[1], ey[1], origin[1]]], np.float64)
        frame = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
        return cv2.warpAffine(frame, inverse, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    corners = origin + np.array([[0, 0], [1, 0], [0, 1], [1, 1]]) @ np.stack([ex, ey]) * (size - 1)
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        sub = image[y0:y1, x0:x1, :3]
    else:
        ys, xs = np.clip(np.arange(y0, y1), 0, h - 1), np.clip(np.arange(x0, x1), 0, w - 1)
        sub = image[ys[:, None], xs[None, :], :3]
    o = origin - np.array([x0, y0])
    # Pillow samples output pixel (i, j) at A(i + 0.5, j + 0.5) with input pixel centres at k + 0.5
    coeffs = (ex[0], ey[0], o[0] + 0.5 - (ex[0] + ey[0]) / 2, ex[1], ey[1], o[1] + 0.5 - (ex[1] + ey[1]) / 2)
    out = Image.fromarray(np.ascontiguousarray(sub, dtype=np.uint8)).transform(
        (size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    return np.asarray(out)


def face_rect(detection: Detection) -> Rect:
    """The landmark model's crop for a detection (box and keypoints in image pixels).

    DetectionsToRectsCalculator (rotation from the eyes, target 0 degrees) then RectTransformationCalculator
    (square on the long side, scale 1.5), computed in pixels.
    """
    x0, y0, x1, y1 = detection.box
    (ax, ay), (bx, by) = np.asarray(detection.keypoints, np.float64)[list(EYE_KEYPOINTS)]
    angle = normalize_radians(-math.atan2(-(by - ay), bx - ax))
    side = max(x1 - x0, y1 - y0) * ROI_SCALE
    return Rect(float((x0 + x1) / 2), float((y0 + y1) / 2), float(side), float(angle))


class FaceMesh:
    """468 face landmarks of an RGB image, as MediaPipe's FaceMesh finds them (static images, one face).

    Args:
        landmark: the face landmark ONNX.
        detector: a :class:`~toolkit.inference.detect.FaceDetector` (shared with the door's crop), or None to
            use :meth:`from_detection` only.
        threads: onnxruntime intra-op threads.
        min_presence: lowest presence sigmoid accepted (below: no face, never a guess).
        twin: the model's ``.tflite`` for LiteRT to run instead of the ONNX (:mod:`toolkit.inference.litert`).

    Raises:
        ToolkitError: the file is missing, not ONNX, or not the face landmark model.
    """

    def __init__(self, landmark: str | Path, detector=None, threads: int = 1,
                 min_presence: float = MIN_PRESENCE, twin: str | Path | None = None) -> None:  # fmt: skip
        self.session = _session(landmark, threads, "face landmark model", twin)
        _check(self.session, landmark, LANDMARK_SIZE, [(1, 1, 3 * NUM_POINTS), (1, 1, 1)], "face landmark model")
        outputs = self.session.get_outputs()
        self._points, self._presence = outputs[0].name, outputs[1].name
        self._input = self.session.get_inputs()[0].name
        self.detector = detector
        self.min_presence = min_presence

    def landmarks(self, image: np.ndarray, rect: Rect) -> tuple[np.ndarray, float]:
        """(468 points in image pixels, presence sigmoid) of the face in ``rect``."""
        crop = warp(image, rect, LANDMARK_SIZE)
        # float32 division: the same numbers as (crop / 255.0).astype(float32) for all 256 values, without the
        # float64 copy
        x = np.divide(crop, np.float32(255), dtype=np.float32)[None]
        points, logit = self.session.run([self._points, self._presence], {self._input: x})
        raw = points.reshape(NUM_POINTS, 3).astype(np.float64)
        presence = 1.0 / (1.0 + math.exp(-float(np.clip(logit.reshape(-1)[0], -100, 100))))
        return crop_to_image(raw, rect, LANDMARK_SIZE).astype(np.float32), presence

    def from_detection(self, image: np.ndarray, detection: Detection) -> Face | None:
        """The face of one detection (image pixels), or None when the presence is below the bar."""
        rect = face_rect(detection)
        points, presence = self.landmarks(_rgb(image), rect)
        if presence < self.min_presence:
            return None
        return Face(points, presence, detection, rect)

    def track(self, image: np.ndarray) -> Face | None:
        """The best-scored face of an HxWx3 RGB image (uint8) of any size, or None.

        Raises:
            ToolkitError: not an HxWx3 image, or no detector given.
        """
        if self.detector is None:
            raise ToolkitError("face mesh: no face detector given; pass one or call from_detection()")
        image = _rgb(image)
        found = self.detector.detect(image)
        if not found:
            return None
        return self.from_detection(image, found[0])  # FaceMesh (max_num_faces=1) keeps the first detection


def _rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] < 3 or min(image.shape[:2]) < 1:
        raise ToolkitError(f"face mesh: expected an HxWx3 RGB image, got shape {image.shape}")
    return image


def roll(points: np.ndarray) -> float:
    """The face's roll (radians): the angle of the line between the outer eye corners."""
    a, b = np.asarray(points, np.float64)[list(EYE_CORNERS), :2]
    return math.atan2(b[1] - a[1], b[0] - a[0])


def features(face: Face) -> np.ndarray:
    """(1404,) float32: the 468 (x, y, z) centred on the nose tip, turned so the eyes are level, divided by the
    distance between the outer eye corners: the same numbers for the same expression wherever the face is in
    the image, whatever its size and tilt."""
    pts = np.asarray(face.points, dtype=np.float64)[:, :3]
    pts = pts - pts[NOSE_TIP]
    angle = roll(face.points)
    c, s = math.cos(-angle), math.sin(-angle)
    xy = pts[:, :2] @ np.array([[c, s], [-s, c]])
    scale = float(np.hypot(*(xy[EYE_CORNERS[1]] - xy[EYE_CORNERS[0]])))
    out = np.concatenate([xy, pts[:, 2:3]], axis=1) / (scale if scale > 1e-6 else 1.0)
    return out.reshape(-1).astype(np.float32)


def aligned_rect(face: Face, scale: float = CROP_SCALE) -> Rect:
    """A square around the mesh, level with the eyes: its extent along the eye line and across, long side x
    ``scale``."""
    angle = roll(face.points)
    c, s = math.cos(angle), math.sin(angle)
    pts = np.asarray(face.points, np.float64)[:, :2]
    u, v = pts @ np.array([c, s]), pts @ np.array([-s, c])
    cu, cv = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    side = max(u.max() - u.min(), v.max() - v.min()) * scale
    return Rect(float(cu * c - cv * s), float(cu * s + cv * c), float(max(side, 1.0)), float(angle))


def aligned_crop(image: np.ndarray, face: Face, size: int = CROP_SIZE, scale: float = CROP_SCALE) -> np.ndarray:
    """The face cut square and level (``size`` x ``size`` uint8 RGB, border replicated): the expression CNN's
    input, the same framing on every camera."""
    rect = aligned_rect(face, scale)
    return warp(_rgb(image), rect, size)


def face_record(face: Face | None) -> dict | None:
    """What an answer says about the face it saw (None: no face): the detector's box and the presence."""
    if face is None:
        return None
    return {"box": [round(float(v), 1) for v in face.box], "presence": round(float(face.score), 4)}
