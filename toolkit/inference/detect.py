"""BlazeFace (MediaPipe's short-range face detector) with numpy, Pillow and onnxruntime only.

The same code crops the door's frames and the training photos (``?crop=face``), so the model sees the
same face crop in both places. The ONNX file is MediaPipe's ``face_detection_short_range.tflite``
converted by :mod:`toolkit.models.detector`; it takes one 128x128 RGB image scaled to [-1, 1] and
returns 896 anchors x 16 regressors (box x, y, w, h, then 6 keypoints x, y, in input pixels relative to
the anchor) and 896 raw scores. The anchor layout and decoding follow the options of MediaPipe's
``face_detection_short_range`` graph (SsdAnchorsCalculator, TensorsToDetectionsCalculator).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError

INPUT_SIZE = 128
NUM_ANCHORS = 896
NUM_COORDS = 16  # 4 box values + 6 keypoints x 2
# SsdAnchorsCalculator options of the short-range graph: 4 layers, strides 8, 16, 16, 16, anchors centred
# in their cell (offset 0.5), one aspect ratio plus one interpolated scale = 2 anchors per layer and cell,
# fixed anchor size (every anchor is 1 x 1: the regressors carry the whole box size).
STRIDES = (8, 16, 16, 16)
ANCHORS_PER_LAYER = 2
ANCHOR_OFFSET = 0.5
# TensorsToDetectionsCalculator: raw scores clipped to +-100 before the sigmoid, kept at >= 0.5.
SCORE_CLIP = 100.0
MIN_SCORE = 0.5
# Weighted non-maximum suppression: boxes overlapping the best one by more than this IoU are merged.
NMS_IOU = 0.3
# The crop adds this fraction of the face box on each side. 0: the box squared, which is already a little
# looser than the tight crops of face datasets such as smiles (their faces fill the photo).
MARGIN = 0.0
# A face that fills the frame is too big for the short-range model (on 64x64 face crops upscaled to 256 it
# finds 94 of 150); shrunk into a black border of half the frame on each side, it finds all 150.
ZOOM_OUT = 0.5


def ssd_anchors(size: int = INPUT_SIZE, strides: tuple = STRIDES, per_layer: int = ANCHORS_PER_LAYER) -> np.ndarray:
    """Anchor centres as an (N, 2) array of normalised (x, y), in the model's output order.

    Consecutive layers with the same stride share one feature map and stack their anchors per cell,
    as MediaPipe does: for 128 px and strides 8, 16, 16, 16 that is 16x16x2 + 8x8x6 = 896 anchors.
    """
    out = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        cells = int(np.ceil(size / strides[i]))
        per_cell = per_layer * (j - i)
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        centres = np.stack([(xs + ANCHOR_OFFSET) / cells, (ys + ANCHOR_OFFSET) / cells], axis=-1).reshape(-1, 2)
        out.append(np.repeat(centres, per_cell, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` (x0, y0, x1, y1) and ``keypoints`` (6, 2) as (x, y), in the units asked for."""

    score: float
    box: tuple[float, float, float, float]
    keypoints: np.ndarray

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def decode(regressors: np.ndarray, scores: np.ndarray, anchors: np.ndarray, size: int = INPUT_SIZE,
           min_score: float = MIN_SCORE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Raw outputs -> (scores (K,), boxes (K, 4) normalised x0 y0 x1 y1, keypoints (K, P, 2)) above ``min_score``.

    Args:
        regressors: (N, 4 + 2P) or (1, N, 4 + 2P): box x, y, w, h then P keypoints x, y, in input pixels from
            the anchor centre (BlazeFace: N 896, P 6; the palm detector: N 2016, P 7).
        scores: (N,), (N, 1) or (1, N, 1) logits.
        anchors: (N, 2) from :func:`ssd_anchors`.
    """
    raw = np.asarray(regressors, dtype=np.float32).reshape(len(anchors), -1)
    logits = np.clip(np.asarray(scores, dtype=np.float32).reshape(-1), -SCORE_CLIP, SCORE_CLIP)
    prob = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)  # exp(100) overflows float32
    keep = prob >= min_score
    raw, prob, anchor = raw[keep] / size, prob[keep], anchors[keep]
    centre = raw[:, 0:2] + anchor
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:].reshape(len(raw), (raw.shape[1] - 4) // 2, 2) + anchor[:, None, :]
    return prob, boxes, keypoints


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (4,) box with each of (K, 4) boxes (x0, y0, x1, y1)."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray,
                 threshold: float = NMS_IOU) -> list[Detection]:  # fmt: skip
    """MediaPipe's weighted NMS: each best remaining box absorbs the boxes overlapping it above ``threshold``.

    The kept detection has the best score and the score-weighted mean of the group's boxes and keypoints:
    neighbouring anchors all see the same face, and their average is steadier than any one of them.
    """
    order = np.argsort(-scores, kind="stable")
    remaining = order
    out = []
    while remaining.size:
        best = remaining[0]
        overlap = iou(boxes[best], boxes[remaining])
        group = remaining[overlap > threshold]
        if group.size == 0:  # a degenerate (zero-area) best box overlaps nothing, not even itself
            group = remaining[:1]
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        points = (keypoints[group] * w[:, :, None]).sum(0) / w.sum()
        out.append(Detection(float(scores[best]), tuple(float(v) for v in box), points))
        remaining = remaining[~np.isin(remaining, group)]
    return out


def letterbox(rgb: np.ndarray, size: int = INPUT_SIZE, pad: float = 0.0) -> tuple[np.ndarray, float, tuple]:
    """Fit an HxWx3 uint8 frame into a black ``size`` square, keeping its aspect ratio.

    ``pad``: also leave this share of the frame's longer side as black border on each side (zoom out).

    Returns:
        (1 x size x size x 3 float32 in [-1, 1], scale frame->square, (x, y) offset of the frame in the square).
    """
    h, w = rgb.shape[:2]
    scale = size / (max(h, w) * (1 + 2 * pad))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.zeros((size, size, 3), dtype=np.float32)
    ox, oy = (size - nw) // 2, (size - nh) // 2
    canvas[oy : oy + nh, ox : ox + nw] = resize_bilinear(rgb, nh, nw)
    return (canvas * np.float32(1 / 127.5) - np.float32(1.0))[None], scale, (ox, oy)


def resize_bilinear(rgb: np.ndarray, nh: int, nw: int) -> np.ndarray:
    """HxWx3 -> nh x nw x 3 float32 (rounded): bilinear between the two nearest pixels, pixel centres aligned.

    No antialiasing, as MediaPipe's own face detection input (OpenCV's bilinear warp): a 640x480 frame read at
    128x96 points, rows first then columns, instead of Pillow's filter over every pixel (which cost more than
    BlazeFace itself). Edges are replicated.
    """
    cv2 = opencv()
    if cv2 is not None:  # the same bilinear taps, in fixed point
        frame = np.ascontiguousarray(rgb[:, :, :3], dtype=np.uint8)
        return cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    h, w = rgb.shape[:2]

    def taps(n_out: int, n_in: int):
        pos = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * np.float32(n_in / n_out) - np.float32(0.5)
        pos = np.clip(pos, 0, n_in - 1)
        i0 = np.floor(pos).astype(np.int64)
        f = (pos - i0).astype(np.float32)
        return i0, np.minimum(i0 + 1, n_in - 1), 1 - f, f

    r0, r1, a0, a1 = taps(nh, h)
    c0, c1, b0, b1 = taps(nw, w)
    pixels = rgb[:, :, :3]
    rows = pixels[r0].astype(np.float32) * a0[:, None, None] + pixels[r1] * a1[:, None, None]
    return np.round(rows[:, c0] * b0[None, :, None] + rows[:, c1] * b1[None, :, None])


def opencv():
    """OpenCV when it is installed (``.[door]`` and training have it; the base install does not), else None.

    The door's crops and resizes use it when it is there: MediaPipe's own (its bilinear warp, fixed-point), and
    several times faster than the Pillow and numpy versions that serve the base install.
    """
    global _OPENCV
    if _OPENCV is None:
        try:
            import cv2

            _OPENCV = cv2
        except ImportError:
            _OPENCV = False
    return _OPENCV or None


_OPENCV = None  # not looked up yet


def square_crop_box(box: tuple, frame_hw: tuple[int, int], margin: float = MARGIN) -> tuple[int, int, int, int]:
    """A square (x0, y0, x1, y1) around ``box`` (pixels), ``margin`` of its larger side added on each side.

    The square is shifted, not cut, at the frame's edges, so the crop keeps its shape; only a face larger
    than the frame gets a smaller square (the whole shorter side).
    """
    h, w = frame_hw
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * margin)
    side = int(round(min(max(side, 1), h, w)))
    x0 = int(round(min(max(cx - side / 2, 0), w - side)))
    y0 = int(round(min(max(cy - side / 2, 0), h - side)))
    return x0, y0, x0 + side, y0 + side


class FaceDetector:
    """BlazeFace short-range on onnxruntime: faces of a frame, and the square crop of the largest one.

    Args:
        path: the detector ONNX (shipped, converted by ``toolkit detector --force``, or an export folder's).
        min_score: keep detections at or above this probability.
        iou: weighted-NMS overlap threshold.
        margin: share of the face box added on each side of the crop.
        threads: onnxruntime intra-op threads (1 at the door, beside the classifier).
        tiles: when neither the frame nor the frame zoomed out shows a face, also look in overlapping squares
            of half the shorter side (a face far from the camera is ~4 px wide once a 640 px frame is 128).
        twin: the detector's ``.tflite`` for LiteRT to run instead of the ONNX (:mod:`toolkit.inference.litert`).

    Raises:
        ToolkitError: the file is missing, not ONNX, or not a BlazeFace-shaped model.
    """

    name = "blazeface"

    def __init__(self, path: str | Path, *, min_score: float = MIN_SCORE, iou: float = NMS_IOU,
                 margin: float = MARGIN, threads: int = 1, tiles: bool = False,
                 twin: str | Path | None = None) -> None:  # fmt: skip
        from toolkit.inference.litert import open_model

        self.path = Path(path)
        if not self.path.is_file():
            raise ToolkitError(f"{self.path}: detector file not found; re-export with --detector blazeface")
        self.session = open_model(self.path, threads, "detector", twin)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shapes = {o.name: tuple(o.shape) for o in outputs}
        self._reg = next((n for n, s in shapes.items() if s[-2:] == (NUM_ANCHORS, NUM_COORDS)), None)
        self._cls = next((n for n, s in shapes.items() if s[-2:] == (NUM_ANCHORS, 1)), None)
        shape = tuple(inputs[0].shape)[1:] if len(inputs) == 1 else None
        if shape != (INPUT_SIZE, INPUT_SIZE, 3) or not (self._reg and self._cls):
            raise ToolkitError(f"{self.path}: not a BlazeFace short-range detector (input {inputs[0].shape}, "
                               f"outputs {list(shapes.values())}); re-export with --detector blazeface")
        self._input = inputs[0].name
        self.anchors = ssd_anchors()
        self.min_score, self.iou, self.margin, self.tiles = min_score, iou, margin, tiles

    def _run(self, rgb: np.ndarray, pad: float = 0.0) -> list[Detection]:
        x, scale, (ox, oy) = letterbox(rgb, INPUT_SIZE, pad)
        reg, cls = self.session.run([self._reg, self._cls], {self._input: x})
        found = weighted_nms(*decode(reg, cls, self.anchors, INPUT_SIZE, self.min_score), self.iou)
        to_frame = np.array([ox, oy], dtype=np.float32)
        out = []
        for d in found:
            corners = (np.array(d.box, dtype=np.float32).reshape(2, 2) * INPUT_SIZE - to_frame) / scale
            points = (d.keypoints * INPUT_SIZE - to_frame) / scale
            out.append(Detection(d.score, tuple(float(v) for v in corners.reshape(-1)), points))
        return out

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an HxWx3 uint8 RGB frame of any size, in frame pixels, best score first.

        The plain pass, then (nothing found) the frame zoomed out, then (still nothing, ``tiles``) every tile.
        """
        found = self.detect_pass(rgb)
        looks = self.second_looks(rgb.shape[:2]) if not found else []
        if looks:
            found = self.look(rgb, looks[0])  # the zoomed-out frame
        if found or len(looks) < 2:
            return found
        for tile in looks[1:]:
            found += self.look(rgb, tile)
        if len(found) > 1:  # the tiles overlap: one face can be found in several
            found = weighted_nms(np.array([d.score for d in found]), np.array([d.box for d in found]),
                                 np.stack([d.keypoints for d in found]), self.iou)  # fmt: skip
        return sorted(found, key=lambda d: -d.score)

    def detect_pass(self, rgb: np.ndarray) -> list[Detection]:
        """The plain pass alone: faces of the whole frame letterboxed to 128 px, best score first."""
        if rgb.ndim != 3 or rgb.shape[2] < 3 or min(rgb.shape[:2]) < 1:
            raise ToolkitError(f"face detector: expected an HxWx3 image, got shape {rgb.shape}")
        return self._run(rgb)

    def second_looks(self, frame_hw: tuple[int, int]) -> list[tuple | None]:
        """What :meth:`detect` tries after an empty plain pass, in order: None (the frame zoomed out), then with
        ``tiles`` each (x, y, side) square of half the shorter side, overlapping by half (frames of 256 px and
        more)."""
        h, w = frame_hw
        looks: list[tuple | None] = [None]
        if not self.tiles or min(h, w) < 2 * INPUT_SIZE:
            return looks
        side, step = min(h, w) // 2, min(h, w) // 4
        for y in sorted({*range(0, h - side, step), h - side}):
            for x in sorted({*range(0, w - side, step), w - side}):
                looks.append((x, y, side))
        return looks

    def look(self, rgb: np.ndarray, which: tuple | None) -> list[Detection]:
        """One second look of :meth:`second_looks` (None: the frame zoomed out), in frame pixels."""
        if which is None:
            return self._run(rgb, ZOOM_OUT)
        x, y, side = which
        out = []
        for d in self._run(rgb[y : y + side, x : x + side]):
            box = (d.box[0] + x, d.box[1] + y, d.box[2] + x, d.box[3] + y)
            out.append(Detection(d.score, box, d.keypoints + np.array([x, y], dtype=np.float32)))
        return out

    def box(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """The square crop (x0, y0, x1, y1) around the largest face, or None when there is none."""
        found = self.detect(rgb)
        if not found:
            return None
        return square_crop_box(max(found, key=lambda d: d.area).box, rgb.shape[:2], self.margin)

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """The square crop of the largest face (a view into ``rgb``), or None: no face, no vote."""
        found = self.box(rgb)
        if found is None:
            return None
        x0, y0, x1, y1 = found
        return rgb[y0:y1, x0:x1]
