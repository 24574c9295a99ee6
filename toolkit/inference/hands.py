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

Both crops map the rectangle's corners onto the crop's corners with pixel centres on integer coordinates, as
OpenCV's warpPerspective does inside MediaPipe; sampling is bilinear. Handedness is MediaPipe's label, which
assumes a mirrored (selfie) image; it matters here only as "mirror the points of one of the two kinds".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.inference.detect import Detection, decode, opencv, ssd_anchors, weighted_nms
from toolkit.inference.handfeatures import (
    FEATURE_VERSION,  # noqa: F401 (bump it there when track() or features() change their numbers)
    FeatureSpec,
    hand_vector,
)

PALM_SIZE = 192
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


def warp(image: np.ndarray, origin: np.ndarray, ex: np.ndarray, ey: np.ndarray, size: int,
         replicate: bool) -> np.ndarray:  # fmt: skip
    """Bilinear ``size`` x ``size`` crop: output pixel (u, v) samples the image at ``origin + u*ex + v*ey``.

    Pixel centres are integer coordinates; outside the image the border is replicated or zero. uint8 images
    give values rounded to integers, as OpenCV's warp of a uint8 image does.
    """
    h, w = image.shape[:2]
    u = np.arange(size, dtype=np.float32)
    xs = np.float32(origin[0]) + u[None, :] * np.float32(ex[0]) + u[:, None] * np.float32(ey[0])
    ys = np.float32(origin[1]) + u[None, :] * np.float32(ex[1]) + u[:, None] * np.float32(ey[1])
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = xs - x0, ys - y0
    x0, y0 = x0.astype(np.int32), y0.astype(np.int32)
    flat = np.ascontiguousarray(image[:, :, :3]).reshape(-1, 3)  # gathered as they are, converted after
    out = np.zeros((size, size, 3), np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            weight = wx * wy
            if not replicate:
                weight = weight * ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h))
            index = np.clip(yi, 0, h - 1) * w + np.clip(xi, 0, w - 1)
            out += flat[index].astype(np.float32) * weight[..., None]
    return np.round(out) if image.dtype == np.uint8 else out


def _cv2_warp(cv2, image: np.ndarray, origin, ex, ey, size: int, border: int) -> np.ndarray:
    # OpenCV's bilinear warp, as MediaPipe's ImageToTensorCalculator runs it: output (u, v) reads the image at
    # origin + u*ex + v*ey (pixel centres on integers), rounded fixed-point arithmetic.
    m = np.array([[ex[0], ey[0], origin[0]], [ex[1], ey[1], origin[1]]], np.float64)
    return cv2.warpAffine(np.ascontiguousarray(image[:, :, :3], dtype=np.uint8), m, (size, size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border, borderValue=0)


def crop(image: np.ndarray, origin: np.ndarray, ex: np.ndarray, ey: np.ndarray, size: int,
         replicate: bool) -> np.ndarray:  # fmt: skip
    """:func:`warp` of a uint8 image by Pillow's affine transform: the same samples, a few times faster.

    Pillow's bilinear sampling truncates where :func:`warp` rounds (values up to 1 lower, 0.5 on average), and
    fills with zero only beyond half a pixel outside the image (replicating inside that band): both well inside
    the landmark parity tolerance (docs/hand-landmarks.md). For a replicated border, the part of the image the
    crop reads is cut out and padded with its edge pixels first, so every sample falls inside it.
    """
    cv2 = opencv()
    if cv2 is not None:
        return _cv2_warp(cv2, image, origin, ex, ey, size, cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT)
    from PIL import Image

    h, w = image.shape[:2]
    far = (size - 1) * np.stack([ex, ey, ex + ey])
    corners = np.vstack([origin, origin + far])
    x0, y0 = (np.floor(corners.min(0)) - 1).astype(int)
    x1, y1 = (np.ceil(corners.max(0)) + 2).astype(int)
    offset = np.zeros(2)
    source = image[:, :, :3]
    if replicate:
        cx0, cy0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
        cx1, cy1 = max(min(x1, w), cx0 + 1), max(min(y1, h), cy0 + 1)
        source = image[cy0:cy1, cx0:cx1, :3]
        pads = (max(cy0 - y0, 0), max(y1 - cy1, 0)), (max(cx0 - x0, 0), max(x1 - cx1, 0))
        if any(p for pair in pads for p in pair):
            source = np.pad(source, (*pads, (0, 0)), mode="edge")
        offset = np.array([cx0 - pads[1][0], cy0 - pads[0][0]], np.float64)
    # Pillow maps output pixel centres (u + 0.5, v + 0.5) and samples at input centres + 0.5.
    o = np.asarray(origin, np.float64) - offset + 0.5 - 0.5 * (ex + ey)
    picture = Image.fromarray(np.ascontiguousarray(source, dtype=np.uint8))
    out = picture.transform((size, size), Image.Transform.AFFINE, (ex[0], ey[0], o[0], ex[1], ey[1], o[1]),
                            Image.Resampling.BILINEAR)  # fmt: skip
    return np.asarray(out)


def letterbox_sample(image: np.ndarray, size: int = PALM_SIZE, corner: np.ndarray | None = None,
                     side: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:  # fmt: skip
    """The palm detector's input (1, size, size, 3) float32 in [0, 1], and the letterbox (corner, side).

    The same samples as :func:`warp` on the letterbox square (bilinear, zero outside the image, rounded for
    uint8), computed as two 1-D interpolations: rows first, then columns. An axis-aligned scale needs no 2-D
    gather, and the palm detector is sensitive enough to Pillow's truncation to move one hard palm by pixels.
    ``corner``, ``side``: another square than the image's letterbox (e.g. :func:`palm_view`'s zoomed out).
    """
    h, w = image.shape[:2]
    if corner is None or side is None:
        corner, side = letterbox_axes(h, w)
    cv2 = opencv()
    if cv2 is not None and image.dtype == np.uint8:
        step = side / size
        pixels = _cv2_warp(cv2, image, corner, (step, 0.0), (0.0, step), size, cv2.BORDER_CONSTANT)
        return (pixels.astype(np.float32) * np.float32(1 / 255))[None], corner, side
    step = np.float32(side / size)
    u = np.arange(size, dtype=np.float32)

    def taps(start: float, n: int):
        # Per output pixel along one axis: (its two source indices clipped, their weights, zeroed outside).
        pos = np.float32(start) + u * step
        i0 = np.floor(pos)
        f = pos - i0
        i0 = i0.astype(np.int64)
        w0 = (1 - f) * ((i0 >= 0) & (i0 < n))
        w1 = f * ((i0 + 1 >= 0) & (i0 + 1 < n))
        return np.clip(i0, 0, n - 1), np.clip(i0 + 1, 0, n - 1), w0.astype(np.float32), w1.astype(np.float32)

    r0, r1, a0, a1 = taps(corner[1], h)
    c0, c1, b0, b1 = taps(corner[0], w)
    rows = (a0 > 0) | (a1 > 0)  # letterbox rows wholly outside the image stay zero
    pixels = image[:, :, :3]
    band = pixels[r0[rows]].astype(np.float32) * a0[rows, None, None] + pixels[r1[rows]] * a1[rows, None, None]
    out = np.zeros((size, size, 3), np.float32)
    out[rows] = band[:, c0] * b0[None, :, None] + band[:, c1] * b1[None, :, None]
    if image.dtype == np.uint8:
        out = np.round(out)
    return (out * np.float32(1 / 255))[None], corner, side


def palm_view(h: int, w: int, zoom: float = 0.0, degrees: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the palm detector's input lies in an h x w image: (origin, ex, ey), input pixel (u, v) reads the image
    at ``origin + u*ex + v*ey``.

    The letterbox square of the image (:func:`letterbox_axes`); ``zoom``: of the image framed first by a black
    border of that fraction of its size on each side (the same samples as letterboxing that bigger picture, without
    making it); ``degrees``: the square turned about its centre, so the detector sees the image turned by that
    many degrees clockwise (a hand held at 40 degrees looks nearer upright in a view turned by 30).
    """
    corner, side = zoomed_letterbox(h, w, zoom)
    step = side / PALM_SIZE
    if not degrees:
        return corner, np.array([step, 0.0]), np.array([0.0, step])
    a = math.radians(degrees)
    ex = np.array([math.cos(a), math.sin(a)]) * step
    ey = np.array([-math.sin(a), math.cos(a)]) * step
    return corner + side / 2 - (ex + ey) * PALM_SIZE / 2, ex, ey


def zoomed_letterbox(h: int, w: int, zoom: float) -> tuple[np.ndarray, float]:
    """:func:`letterbox_axes` of the image framed by ``zoom`` of its size on each side, in the image's pixels."""
    by, bx = round(h * zoom), round(w * zoom)
    corner, side = letterbox_axes(h + 2 * by, w + 2 * bx)
    return corner - np.array([bx, by], np.float64), side


def palm_sample(image: np.ndarray, zoom: float = 0.0, degrees: float = 0.0):
    """The palm detector's input (1, 192, 192, 3) float32 in [0, 1] for :func:`palm_view`, and that view's axes.

    Zero outside the image. Not turned, it is :func:`letterbox_sample`'s (of the framed picture when zoomed out).
    """
    h, w = image.shape[:2]
    origin, ex, ey = palm_view(h, w, zoom, degrees)
    if not degrees:
        corner, side = zoomed_letterbox(h, w, zoom)
        return letterbox_sample(image, PALM_SIZE, corner, side)[0], origin, ex, ey
    cv2 = opencv()
    if cv2 is not None and image.dtype == np.uint8:
        pixels = _cv2_warp(cv2, image, origin, ex, ey, PALM_SIZE, cv2.BORDER_CONSTANT)
    else:
        pixels = warp(image, origin, ex, ey, PALM_SIZE, replicate=False)
    return (pixels.astype(np.float32) * np.float32(1 / 255))[None], origin, ex, ey


def sample(image: np.ndarray, origin: np.ndarray, ex: np.ndarray, ey: np.ndarray, size: int,
           replicate: bool) -> np.ndarray:  # fmt: skip
    """The model input (1, size, size, 3) float32 in [0, 1]: :func:`crop` for uint8 images, else :func:`warp`."""
    if image.dtype == np.uint8:
        pixels = crop(image, origin, ex, ey, size, replicate)
    else:
        pixels = warp(image, origin, ex, ey, size, replicate)
    return (pixels.astype(np.float32) * np.float32(1 / 255))[None]


def letterbox_axes(h: int, w: int) -> tuple[np.ndarray, float]:
    """The square (top-left corner, side) that holds the whole image, centred: the palm detector's input."""
    side = float(max(h, w))
    return np.array([(w - side) / 2, (h - side) / 2]), side


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


def _session(path: str | Path, threads: int, what: str):
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"{path}: {what} file not found; fetch the hand models first ('toolkit export' does)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ToolkitError(f"{path}: cannot load the {what} ({str(exc).splitlines()[0][:200]})") from exc


def _check(session, path, size: int, outputs: list[tuple], what: str) -> None:
    shape = tuple(session.get_inputs()[0].shape)[1:]
    got = [tuple(o.shape)[1:] for o in session.get_outputs()]
    if shape != (size, size, 3) or got != outputs:
        raise ToolkitError(f"{path}: not MediaPipe's {what} (input {shape}, outputs {got})")


class HandTracker:
    """The most confident hand of an RGB image, as MediaPipe's Hands solution finds it (static images).

    Args:
        palm: the palm detector ONNX. landmark: the hand landmark ONNX.
        threads: onnxruntime intra-op threads for each model.
        min_score: lowest palm score and hand presence accepted.

    Raises:
        ToolkitError: a file is missing, not ONNX, or not of the expected model.
    """

    def __init__(self, palm: Path, landmark: Path, threads: int = 1, min_score: float = MIN_SCORE) -> None:
        self.palm = _session(palm, threads, "palm detector")
        _check(self.palm, palm, PALM_SIZE, [(NUM_ANCHORS, 4 + 2 * NUM_KEYPOINTS), (NUM_ANCHORS, 1)], "palm detector")
        self.landmark = _session(landmark, threads, "hand landmark model")
        _check(self.landmark, landmark, LANDMARK_SIZE, [(3 * NUM_POINTS,), (1,), (1,), (3 * NUM_POINTS,)],
               "hand landmark model")  # fmt: skip
        self._palm_input = self.palm.get_inputs()[0].name
        self._landmark_input = self.landmark.get_inputs()[0].name
        self.anchors = palm_anchors()
        self.min_score = min_score

    def palms(self, image: np.ndarray, zoom: float = 0.0, degrees: float = 0.0) -> list[Detection]:
        """Palm detections (score, box, 7 keypoints) in image pixels, best first, in :func:`palm_view`'s view.

        A turned view's box is the detector's own (its width and height as the detector saw them) about its centre
        mapped back into the image: :func:`hand_rect` reads only that centre, width and height.
        """
        x, origin, ex, ey = palm_sample(image, zoom, degrees)
        reg, logits = self.palm.run(None, {self._palm_input: x})
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
