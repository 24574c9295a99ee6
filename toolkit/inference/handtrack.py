"""Following one hand from frame to frame of a camera stream, as MediaPipe's video mode does.

A photo is judged alone (:meth:`HandTracker.track`: palm detector, then landmarks). A camera stream is a
sequence, and the hand in one frame is where it was in the last: :class:`HandStream` crops the next frame
where the last landmarks were, and runs the palm detector only when it has no hand to follow.

The rule for losing and re-finding a hand (tested on a moving sequence in tests/runtime/test_runtime_handtrack.py):

1. Following: the landmark model reads the rectangle made from the previous frame's landmarks
   (:func:`landmarks_rect`, MediaPipe's ``hand_landmark_landmarks_to_roi``: rotation from the wrist towards the
   middle of the index, middle and ring knuckles; the box of 12 palm and finger-base points in that rotation,
   shifted 0.1 of its height towards the fingers, squared on its long side, doubled). Its hand presence must
   reach ``min_score`` and the rectangle's centre must lie inside the frame; else the hand is lost.
2. Lost (or nothing followed yet): the palm detector looks at the same frame at once, as a photo's would.
   What it finds is read as in a photo, and followed from the next frame on. A frame with no hand found is
   "no hand" (no vote at the door), never the last frame's answer.
3. A frame without a hand costs one palm pass, never more: the plain view on even frames of a run without a
   hand; the odd ones take the photo path's other views in turn (:func:`views`): the zoomed-out one (a hand
   that fills the frame, :data:`toolkit.inference.handpipe.ZOOM_OUT`) every fourth frame, the turned ones
   (:data:`toolkit.inference.handpipe.TURNS`, a hand held far from upright) in between. A hand too close for
   the plain view is found within 4 frames, a turned one within the cycle's length (16 frames with two turns).
4. A frame of another size (a new camera mode) forgets the hand.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from toolkit.inference.hands import Hand, Rect, hand_rect, normalize_radians, turned_views

# hand_landmark_landmarks_to_roi.pbtxt: the wrist, the thumb's first two joints and each finger's first two.
ROI_POINTS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)
WRIST, INDEX_MCP, MIDDLE_MCP, RING_MCP = 0, 5, 9, 13
TRACK_SCALE = 2.0  # the landmarks' box (not the palm's) is doubled
TRACK_SHIFT_Y = -0.1


def landmarks_rect(points: np.ndarray) -> Rect:
    """The next frame's crop from this frame's 21 landmarks (image pixels)."""
    pts = np.asarray(points, np.float64)[:, :2]
    wrist = pts[WRIST]
    knuckles = ((pts[INDEX_MCP] + pts[RING_MCP]) / 2 + pts[MIDDLE_MCP]) / 2
    angle = normalize_radians(math.pi / 2 - math.atan2(-(knuckles[1] - wrist[1]), knuckles[0] - wrist[0]))
    sub = pts[list(ROI_POINTS)]
    centre = (sub.max(0) + sub.min(0)) / 2
    c, s = math.cos(-angle), math.sin(-angle)
    d = sub - centre
    turned = np.stack([d[:, 0] * c - d[:, 1] * s, d[:, 0] * s + d[:, 1] * c], 1)  # into the hand's own axes
    lo, hi = turned.min(0), turned.max(0)
    mid = (lo + hi) / 2
    w, h = hi - lo
    c, s = math.cos(angle), math.sin(angle)
    cx = mid[0] * c - mid[1] * s + centre[0] - h * TRACK_SHIFT_Y * s
    cy = mid[0] * s + mid[1] * c + centre[1] + h * TRACK_SHIFT_Y * c
    return Rect(float(cx), float(cy), float(max(w, h) * TRACK_SCALE), float(angle))


def views(zoom_out: float, turns) -> list[tuple[float, float]]:
    """The palm detector's views (zoom, degrees) for frames 0, 1, 2... of a run without a hand (rule 3)."""
    others = [(zoom_out, 0.0)] if zoom_out > 0 else []
    turned = turned_views(zoom_out, turns)
    if others and turned:  # the zoomed-out view on every second odd frame, the turned ones between
        others = [v for t in turned for v in (others[0], t)]
    else:
        others = others or turned
    return [v for other in others for v in ((0.0, 0.0), other)] or [(0.0, 0.0)]


class HandStream:
    """One camera stream's hand: follows it across frames (see the module's rule); not thread-safe.

    Args:
        tracker: a :class:`~toolkit.inference.hands.HandTracker` (or anything with ``palms`` and ``landmarks``).
        zoom_out: the zoom-out border (0: never). turns: the turned views, degrees (empty: none).
    """

    def __init__(self, tracker, zoom_out: float = 0.0, turns: tuple = ()) -> None:
        self.tracker = tracker
        self.zoom_out = zoom_out
        self.cycle = views(zoom_out, turns)
        self.rect: Rect | None = None  # where to read the next frame; None: look for a palm
        self.palm_score = 0.0
        self.misses = 0  # frames in a row without a hand
        self.shape: tuple | None = None
        self.detections = 0  # palm detector runs (for benchmarks and tests)

    def reset(self) -> None:
        """Forget the hand (a gap in the stream: the next frame is looked at like a photo)."""
        self.rect, self.misses, self.shape = None, 0, None

    def track(self, image: np.ndarray) -> Hand | None:
        """The hand of this frame (HxWx3 RGB), or None."""
        image = np.asarray(image)
        if image.shape != self.shape:
            self.reset()
            self.shape = image.shape
        hand = self._follow(image) if self.rect is not None else None
        if hand is None:
            hand = self._find(image)
        self.misses = 0 if hand is not None else self.misses + 1
        self.rect = landmarks_rect(hand.points) if hand is not None else None
        return hand

    def _read(self, image: np.ndarray, rect: Rect) -> Hand | None:
        points, presence, left = self.tracker.landmarks(image, rect)
        if presence < self.tracker.min_score:
            return None
        label, label_score = ("left", left) if left >= 0.5 else ("right", 1.0 - left)
        return Hand(points, presence, label, self.palm_score, label_score, rect)

    def _follow(self, image: np.ndarray) -> Hand | None:
        h, w = image.shape[:2]
        if not (0 <= self.rect.cx < w and 0 <= self.rect.cy < h):
            return None  # the hand has left the frame
        return self._read(image, self.rect)

    def _find(self, image: np.ndarray) -> Hand | None:
        self.detections += 1
        zoom, degrees = self.cycle[self.misses % len(self.cycle)]
        # The zoomed-out and turned views are the palm detector's only (no bigger or turned copy of the frame is
        # made); the landmark model reads the frame itself, its border replicated, as when it follows.
        found = self.tracker.palms(image, zoom, degrees) if zoom or degrees else self.tracker.palms(image)
        if not found:
            return None
        best = found[0]
        self.palm_score = best.score
        rect = hand_rect(best.box, np.asarray(best.keypoints, np.float64))
        hand = self._read(image, rect)
        return None if hand is None else dataclasses.replace(hand, palm_score=best.score)
