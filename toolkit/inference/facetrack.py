"""Following one face from frame to frame of a camera stream, as MediaPipe's face-mesh graph does in video mode.

A photo is judged alone (:meth:`toolkit.inference.facemesh.FaceMesh.track`: BlazeFace on the frame, the frame
zoomed out, then overlapping tiles; the face mesh on the best detection). Training, ``toolkit predict|evaluate``
and ``/predict`` stay there. A camera stream is a sequence, and the face in one frame is where it was in the last:
:class:`FaceStream` reads the next frame's landmarks where the last ones were, and runs the detector only when
it has no face to follow.

The rule for losing and re-finding a face (tested on a moving sequence in
tests/runtime/test_runtime_facetrack.py):

1. Following: the landmark model reads the square that sits, in the previous frame's face, where the crop of
   the detection that found the face sat in that face (:func:`anchor`, :func:`landmarks_rect`). A face's own
   frame is its 468 points turned so the outer eye corners 33 and 263 are level: their box's centre and long
   side (:func:`landmarks_frame`). MediaPipe's ``face_landmark_landmarks_to_roi`` (the points' image-axis box
   squared and scaled by 1.5) settles, frame after frame, on a crop ~10 % larger than the detection's: on the
   moving test sequence its points were 4.4 px off the static chain's and P(smile) 0.15 off on average, and the
   heads are trained on the static chain's features. Kept where the detection put it, a still face reads the
   same crop in every frame (no drift); on 103 of those door-like faces (rule 3) moved 5 frames, the followed
   answer had the static chain's label 93 times, as often as the static chain kept its own. The presence
   sigmoid must reach the mesh's ``min_presence`` (0.5) and the square's centre must lie inside the frame; else
   the face is lost.
2. Lost (or nothing followed yet): the detector looks at the same frame at once, its plain pass as a photo's.
   What it finds is read as in a photo (the ROI from the detection) and followed from the next frame on. A frame
   without a face found is "no face" (no vote at the door), never the last frame's answer.
3. The photo path's second looks (the frame zoomed out for a face that fills it, then 15 tiles of half the
   shorter side for a face far from the camera) cost 16 more detector passes on every frame without a face.
   At the door they take turns instead: :data:`LOOKS_PER_FRAME` of them after the plain pass on each frame
   without a face, in a fixed cycle, so a face standing anywhere in the frame is found within
   ``ceil(16 / LOOKS_PER_FRAME)`` frames, and an empty frame costs 1 + LOOKS_PER_FRAME passes, not 17. On the
   frame a followed face is lost and the :data:`AROUND_FRAMES` - 1 after it, the second look is the square
   around where it was (twice the followed crop's side) instead, so a small face only the tiles see is found
   again at once when it is still there (a blink, a blurred frame, a quick move). Once every second look has run
   on one scene (no cell of the frame's thumbnail changed by more than :data:`STILL_LEVELS` since the first of
   them) and found nothing, they wait until the scene changes: an empty, still doorway costs one pass a frame, as
   MediaPipe's FaceMesh; a change anywhere starts them all again. On 120 door-like frames of ``smiles`` photos
   (``python -m benchmarks.face_chain --recall 120``: a ~25 px face in 64 upscaled into a 640x480 frame) the door
   path found 110 faces within the cycle, the photo path 109, the plain pass alone 40.
4. A frame of another size (a new camera mode) forgets the face; so do a camera fault and a model reload (the
   door then opens a new stream: :meth:`toolkit.runtime.door.DoorLoop._stream_for`).

A followed face's ``detection`` is made from its landmarks (their box; keypoints from the eye corners, nose tip,
mouth and the face's sides), for the page's face box: the detector did not run on that frame.
"""

from __future__ import annotations

import math

import numpy as np

from toolkit.inference.detect import Detection, weighted_nms
from toolkit.inference.facemesh import EYE_CORNERS, Face
from toolkit.inference.hands import Rect, normalize_radians

# Second looks after the plain pass on a frame without a face (rule 3). 1: an empty frame costs two passes while
# the scene changes (MediaPipe's FaceMesh spends one), one on a still scene; a far face is found within 16 frames
# (~0.5-1 s of a camera).
LOOKS_PER_FRAME = 1
AROUND_FRAMES = 4  # frames a lost face is looked for where it was, before the cycle of second looks resumes
# Every second look having found nothing on one scene, they are not run again until some cell of a 32x24 thumbnail
# of the frame (a 20x20 px patch of 640x480) changes by more than this many grey levels (sensor noise moves a
# cell's mean by well under 1; a face coming into view, by tens).
STILL_LEVELS = 8.0
THUMB = (32, 24)
THUMB_ROWS = 4  # the thumbnail reads every 4th row: 100 pixels a cell of 640x480 (0.07 ms instead of 0.27)
# Mesh points standing in for BlazeFace's six keypoints on a followed face (eyes as the middle of their corners).
_KEYPOINTS = ((33, 133), (362, 263), (1,), (13, 14), (234,), (454,))


def landmarks_frame(points: np.ndarray) -> Rect:
    """The face's own square from its 468 points (image pixels): turned so the outer eye corners 33 and 263 are
    level, the points' box in that rotation, its centre and long side (MediaPipe's ``face_landmark_landmarks_
    to_roi`` takes the image-axis box, squared and scaled by 1.5)."""
    pts = np.asarray(points, np.float64)[:, :2]
    (ax, ay), (bx, by) = pts[list(EYE_CORNERS)]
    angle = normalize_radians(-math.atan2(-(by - ay), bx - ax))
    c, s = math.cos(angle), math.sin(angle)
    u, v = pts @ np.array([c, s]), pts @ np.array([-s, c])  # along the eye line, and across it
    cu, cv = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    side = float(max(u.max() - u.min(), v.max() - v.min()))
    return Rect(float(cu * c - cv * s), float(cu * s + cv * c), max(side, 1.0), float(angle))


def anchor(points: np.ndarray, rect: Rect) -> tuple[float, float, float, float]:
    """Where ``rect`` (the crop the points were read from) sits in the points' own frame: (offset along, offset
    across, side, angle), lengths in units of the frame's side."""
    frame = landmarks_frame(points)
    c, s = math.cos(frame.angle), math.sin(frame.angle)
    dx, dy = rect.cx - frame.cx, rect.cy - frame.cy
    return ((dx * c + dy * s) / frame.side, (-dx * s + dy * c) / frame.side, rect.side / frame.side,
            normalize_radians(rect.angle - frame.angle))


def landmarks_rect(points: np.ndarray, where: tuple[float, float, float, float]) -> Rect:
    """The next frame's landmark crop: the square at ``where`` (from :func:`anchor`) in these points' frame."""
    frame = landmarks_frame(points)
    c, s = math.cos(frame.angle), math.sin(frame.angle)
    du, dv, side, turn = where
    return Rect(frame.cx + (du * c - dv * s) * frame.side, frame.cy + (du * s + dv * c) * frame.side,
                side * frame.side, normalize_radians(frame.angle + turn))


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The frame's :data:`THUMB` thumbnail (mean of each patch over every :data:`THUMB_ROWS`-th row, float32 grey
    levels per channel)."""
    from toolkit.inference.detect import opencv

    w, h = THUMB
    if image.shape[0] >= THUMB_ROWS * h:
        image = image[::THUMB_ROWS]  # a view: OpenCV reads strided rows without a copy
    cv2 = opencv()
    if cv2 is not None and image.shape[2] == 3 and image.dtype == np.uint8:
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    ih, iw = image.shape[:2]
    ys, xs = np.arange(h + 1) * ih // h, np.arange(w + 1) * iw // w
    sums = np.add.reduceat(np.add.reduceat(image[:, :, :3].astype(np.float32), ys[:-1], axis=0), xs[:-1], axis=1)
    return sums / (np.diff(ys)[:, None, None] * np.diff(xs)[None, :, None])


def landmarks_detection(points: np.ndarray, score: float) -> Detection:
    """A detection standing for a followed face: the landmarks' box and six keypoints from the mesh."""
    pts = np.asarray(points, np.float32)[:, :2]
    lo, hi = pts.min(0), pts.max(0)
    keypoints = np.stack([pts[list(idx)].mean(0) for idx in _KEYPOINTS])
    return Detection(float(score), (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), keypoints)


class FaceStream:
    """One camera stream's face: follows it across frames (see the module's rule); not thread-safe.

    Args:
        mesh: a :class:`~toolkit.inference.facemesh.FaceMesh` (its ``landmarks`` and ``min_presence``).
        detector: the :class:`~toolkit.inference.detect.FaceDetector` a photo would use (its ``tiles`` setting
            says whether the tiles are among the second looks).
        looks_per_frame: second looks after the plain pass on each frame without a face (0: none).
    """

    def __init__(self, mesh, detector, looks_per_frame: int = LOOKS_PER_FRAME) -> None:
        self.mesh = mesh
        self.detector = detector
        self.looks_per_frame = looks_per_frame
        self.rect: Rect | None = None  # where to read the next frame; None: look for a face
        self.where: tuple | None = None  # the detection's crop in its face's own frame (rule 1)
        self.shape: tuple | None = None
        self.cursor = 0  # the next second look in the cycle
        self.lost: tuple | None = None  # the square around where the face was lost
        self.lost_frames = 0  # frames left to look there
        self.sweep = 0  # second looks run on this scene without a face
        self.scene: np.ndarray | None = None  # the thumbnail of the scene they ran on (rule 3)
        self.passes = 0  # detector passes run (for benchmarks and tests)
        self.detections = 0  # frames on which the detector ran

    def reset(self) -> None:
        """Forget the face (a gap in the stream: the next frame is looked at afresh)."""
        self.rect, self.shape, self.cursor, self.lost_frames, self.sweep, self.scene = None, None, 0, 0, 0, None

    def track(self, image: np.ndarray) -> Face | None:
        """The face of this frame (HxWx3 RGB uint8), or None."""
        image = np.asarray(image)
        if image.shape != self.shape:
            self.reset()
            self.shape = image.shape
        face = self._follow(image) if self.rect is not None else None
        if face is None:
            if self.rect is not None:  # just lost: look where it was for a few frames (rule 3)
                self.lost, self.lost_frames = self._around(image.shape[:2]), AROUND_FRAMES
            face = self._find(image, self.lost if self.lost_frames > 0 else None)
            self.lost_frames -= 1
            if face is not None:
                self.where = anchor(face.points, face.rect)
        self.rect = landmarks_rect(face.points, self.where) if face is not None else None
        return face

    def _follow(self, image: np.ndarray) -> Face | None:
        h, w = image.shape[:2]
        rect = self.rect
        if not (0 <= rect.cx < w and 0 <= rect.cy < h):
            return None  # the face has left the frame
        points, presence = self.mesh.landmarks(image, rect)
        if presence < self.mesh.min_presence:
            return None
        return Face(points, presence, landmarks_detection(points, presence), rect)

    def _around(self, frame_hw: tuple[int, int]) -> tuple[int, int, int]:
        """The square (x, y, side) around the followed crop, twice its side, inside the frame (rule 3)."""
        h, w = frame_hw
        side = int(min(max(2 * self.rect.side, 1), h, w))
        x = int(round(min(max(self.rect.cx - side / 2, 0), w - side)))
        y = int(round(min(max(self.rect.cy - side / 2, 0), h - side)))
        return x, y, side

    def _find(self, image: np.ndarray, around: tuple | None = None) -> Face | None:
        self.detections += 1
        self.passes += 1
        found = self.detector.detect_pass(image)
        if not found and around is not None and self.looks_per_frame > 0:  # the face just lost: where it was
            self.passes += 1
            found = self.detector.look(image, around)
        elif not found and self.looks_per_frame > 0:
            looks = self.detector.second_looks(image.shape[:2])
            thumb = thumbnail(image)
            if self.scene is None or np.abs(thumb - self.scene).max() > STILL_LEVELS:
                self.scene, self.sweep = thumb, 0  # a new scene: each second look again (rule 3)
            elif self.sweep >= len(looks):
                return None  # this scene has had every second look
            for _ in range(min(self.looks_per_frame, len(looks))):
                self.passes += 1
                found += self.detector.look(image, looks[self.cursor % len(looks)])
                self.cursor = (self.cursor + 1) % len(looks)
                self.sweep += 1
        if found:
            self.scene, self.sweep = None, 0
        if len(found) > 1:  # neighbouring tiles can both hold the face
            found = weighted_nms(np.array([d.score for d in found]), np.array([d.box for d in found]),
                                 np.stack([d.keypoints for d in found]), self.detector.iou)  # fmt: skip
        if not found:
            return None
        return self.mesh.from_detection(image, max(found, key=lambda d: d.score))  # as a photo's (rule 2)
