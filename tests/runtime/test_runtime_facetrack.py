"""Following a face across frames (toolkit.inference.facetrack): the rule for losing and re-finding it.

The rule is checked with a fake mesh and detector (fast); the answers on a moving sequence with the committed
face export (exported/happy-face): the parity fixture's door frame (the public-domain astronaut as a ~25 px face
in a 640x480 grey frame) shifted 3 px right and 2 px down a frame.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from toolkit.inference.detect import Detection
from toolkit.inference.facetrack import FaceStream, anchor, landmarks_frame, landmarks_rect
from toolkit.inference.hands import Rect

ROOT = Path(__file__).resolve().parents[2]
FACE_EXPORT = ROOT / "exported" / "happy-face"


def mesh_points(cx=300.0, cy=200.0, size=100.0, angle=0.0) -> np.ndarray:
    """468 points spread over a square face, outer eye corners 33 and 263 level before turning by ``angle``."""
    rng = np.random.default_rng(0)
    pts = np.zeros((468, 3))
    pts[:, :2] = rng.uniform(-0.5, 0.5, (468, 2)) * size
    pts[[0, 1], :2] = [[-0.5, -0.5], [0.5, 0.5]] * np.array(size)  # the extent is exactly the square
    pts[33, :2], pts[263, :2] = [-0.3 * size, -0.1 * size], [0.3 * size, -0.1 * size]
    c, s = math.cos(angle), math.sin(angle)
    pts[:, :2] = pts[:, :2] @ np.array([[c, s], [-s, c]]) + [cx, cy]
    return pts


class FakeMesh:
    """Reads a face wherever ``faces`` says one is (a rect whose centre is within half its side: presence 1)."""

    min_presence = 0.5

    def __init__(self) -> None:
        self.face: tuple | None = (300.0, 200.0)  # where the face is in the current frame
        self.reads: list[Rect] = []

    def landmarks(self, image, rect: Rect):
        self.reads.append(rect)
        if self.face is None or math.hypot(rect.cx - self.face[0], rect.cy - self.face[1]) > rect.side / 2:
            return mesh_points(rect.cx, rect.cy), 0.01
        return mesh_points(*self.face).astype(np.float32), 0.99

    def from_detection(self, image, detection: Detection):
        from toolkit.inference.facemesh import Face, face_rect

        rect = face_rect(detection)
        points, presence = self.landmarks(image, rect)
        return Face(points, presence, detection, rect) if presence >= self.min_presence else None


class FakeDetector:
    """Finds the mesh's face in its plain pass only when ``visible``, else in the second look ``hidden_in``."""

    iou = 0.3

    def __init__(self, mesh: FakeMesh) -> None:
        self.mesh, self.visible, self.hidden_in, self.looked = mesh, True, None, []
        self.small = False  # True: any square holding the face finds it, the whole frame does not

    def _found(self):
        x, y = self.mesh.face
        keypoints = np.array([[x - 20, y - 10], [x + 20, y - 10], [x, y], [x, y + 20], [x - 45, y], [x + 45, y]])
        return [Detection(0.9, (x - 50, y - 50, x + 50, y + 50), keypoints)]

    def detect_pass(self, image):
        self.looked.append("plain")
        return self._found() if self.mesh.face is not None and self.visible else []

    def second_looks(self, frame_hw):
        return [None, (0, 0, 240), (120, 0, 240), (240, 0, 240)]

    def look(self, image, which):
        self.looked.append(which)
        if self.mesh.face is None:
            return []
        if self.small and which is not None:
            x, y, side = which
            inside = x <= self.mesh.face[0] < x + side and y <= self.mesh.face[1] < y + side
            return self._found() if inside else []
        return self._found() if which == self.hidden_in else []


def stream():
    mesh = FakeMesh()
    return FaceStream(mesh, FakeDetector(mesh), looks_per_frame=2), mesh


FRAME = np.zeros((480, 640, 3), np.uint8)


def test_the_crop_keeps_its_place_in_the_faces_own_frame_as_the_face_moves_and_turns():
    points = mesh_points(300, 200, 100, 0.0)
    frame = landmarks_frame(points)
    assert (frame.cx, frame.cy, frame.side, frame.angle) == pytest.approx((300, 200, 100, 0), abs=1e-6)
    crop = Rect(305.0, 210.0, 150.0, 0.1)
    where = anchor(points, crop)
    again = landmarks_rect(points, where)  # the same face: the same crop (no drift on a still face)
    assert (again.cx, again.cy, again.side, again.angle) == pytest.approx((305, 210, 150, 0.1), abs=1e-6)
    moved = landmarks_rect(mesh_points(340, 180, 200, 0.5), where)  # moved, twice as big, turned by 0.5
    off = np.array([5.0, 10.0]) * 2
    c, s = math.cos(0.5), math.sin(0.5)
    want = np.array([340, 180]) + [off[0] * c - off[1] * s, off[0] * s + off[1] * c]
    assert (moved.cx, moved.cy) == pytest.approx(tuple(want), abs=1e-6)
    assert (moved.side, moved.angle) == pytest.approx((300, 0.6), abs=1e-6)


def test_a_followed_face_skips_the_detector_and_a_lost_one_is_looked_for_on_the_same_frame():
    s, mesh = stream()
    assert s.track(FRAME) is not None and s.detections == 1
    for x in (303, 306, 309):  # moving a few px a frame: followed, no detector
        mesh.face = (x, 200.0)
        face = s.track(FRAME)
        assert face is not None and face.points[:, 0].mean() == pytest.approx(mesh_points(x).mean(0)[0])
    assert s.detections == 1
    mesh.face = (500.0, 400.0)  # jumped out of the followed crop: presence < 0.5 -> found again at once
    assert s.track(FRAME) is not None and s.detections == 2


def test_no_face_is_none_never_the_last_answer_and_the_crop_leaving_the_frame_loses_the_face():
    s, mesh = stream()
    assert s.track(FRAME) is not None
    mesh.face = None
    assert s.track(FRAME) is None and s.rect is None  # no vote, and nothing left to follow
    mesh.face = (300.0, 200.0)
    assert s.track(FRAME) is not None
    s.rect = Rect(700.0, 200.0, 150.0, 0.0)  # the followed crop's centre has left the 640 px frame
    reads = len(mesh.reads)
    assert s.track(FRAME) is not None and s.detections == 4
    assert len(mesh.reads) == reads + 1  # not read outside the frame: straight to the detector


def test_a_new_frame_size_forgets_the_face():
    s, mesh = stream()
    s.track(FRAME)
    s.track(np.zeros((240, 320, 3), np.uint8))
    assert s.detections == 2


def test_second_looks_take_turns_on_frames_without_a_face():
    s, mesh = stream()
    s.detector.visible = False
    mesh.face = None
    for i in range(3):  # a scene that changes (a person walking by, ...)
        assert s.track(np.full((480, 640, 3), 40 * i, np.uint8)) is None
    looked = s.detector.looked
    # each frame: the plain pass, then two second looks, cycling through all four
    assert looked == ["plain", None, (0, 0, 240), "plain", (120, 0, 240), (240, 0, 240), "plain", None, (0, 0, 240)]
    assert s.passes == 9
    mesh.face, s.detector.hidden_in = (300.0, 200.0), (0, 0, 240)  # a far face only one tile shows
    assert s.track(FRAME) is None  # this frame's looks are the other tiles
    assert s.track(FRAME) is not None  # found within the cycle
    looks = len(s.detector.looked)
    assert s.track(FRAME) is not None and len(s.detector.looked) == looks  # then followed: no detector


def test_a_still_scene_has_each_second_look_once_until_it_changes():
    s, mesh = stream()  # two looks a frame, four looks in all
    s.detector.visible, mesh.face = False, None
    noisy = np.random.default_rng(0)
    frames = [np.clip(100 + noisy.normal(0, 8, (480, 640, 3)), 0, 255).astype(np.uint8) for _ in range(5)]
    for frame in frames[1:]:
        frame[200:240, 300:340] = 250  # something came into view on the second frame (and stays)
    for frame in frames:
        assert s.track(frame) is None
    # frame 0: 2 looks; 1 (changed): 2 looks, counted afresh; 2: 2 looks (all 4 on this scene); 3, 4: none
    assert s.passes == 5 + 6
    assert s.detector.looked[-2:] == ["plain", "plain"]
    frames[4][0:40, 0:40] = 0  # a change anywhere: all the looks again
    s.track(frames[4])
    assert s.passes == 11 + 3


def test_a_lost_small_face_is_looked_for_where_it_was_then_the_cycle_resumes():
    mesh = FakeMesh()
    s = FaceStream(mesh, FakeDetector(mesh), looks_per_frame=1)
    s.detector.visible, s.detector.small, s.detector.hidden_in = False, True, "nowhere"  # a far face: squares only
    mesh.face = (500.0, 400.0)  # outside the first three cycle squares
    for _ in range(2):
        assert s.track(FRAME) is None
    mesh.face = (300.0, 200.0)  # in the third square (120, 0, 240): found, then followed
    assert s.track(FRAME) is not None and s.detector.looked[-1] == (120, 0, 240)
    assert s.track(FRAME) is not None
    followed = s.rect
    mesh.face = None  # a blink: lost
    assert s.track(FRAME) is None
    around = s.detector.looked[-1]
    assert around[2] == int(2 * followed.side)  # twice the followed crop, around it
    assert around[0] <= followed.cx < around[0] + around[2] and around[1] <= followed.cy < around[1] + around[2]
    mesh.face = (303.0, 200.0)  # back: found at once where it was, not after a cycle of 4 looks
    assert s.track(FRAME) is not None and s.detector.looked[-1] == around
    mesh.face = None
    for _ in range(4):  # lost again: 4 frames around it, then the cycle goes on where it stopped
        assert s.track(FRAME) is None
    again = s.detector.looked[-1]
    assert s.detector.looked[-8:] == ["plain", again] * 4 and again[0] == pytest.approx(around[0] + 3, abs=1)
    assert s.track(FRAME) is None and s.detector.looked[-1] == (240, 0, 240)


@pytest.fixture(scope="module")
def predictor():
    if not (FACE_EXPORT / "manifest.json").is_file():
        pytest.skip("no committed face export")
    from toolkit.inference.predictor import Predictor

    return Predictor(FACE_EXPORT)


def test_followed_answers_match_the_static_chain_on_a_moving_face(predictor):
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_facemesh_parity import prepare

    door = prepare(ROOT / "tests" / "fixtures" / "facemesh_parity", "door")
    frames = [np.roll(door, (2 * t, 3 * t), axis=(0, 1)) for t in range(12)]  # grey rolls in: no seam
    chain, s = predictor.hands, predictor.stream()
    first = chain.features(frames[0])[1].points[:, :2]
    per_frame, drift, p_static_all, p_followed_all = [], [], [], []
    for t, frame in enumerate(frames):
        p_static = predictor.predict(frame)
        p_followed = predictor.predict(frame, stream=s)
        static, followed = chain.features(frame)[1], chain.features(frame, stream=s)[1]  # (s: one more frame)
        assert followed is not None and p_followed.details["face"] is not None
        per_frame.append(float(np.abs(followed.points[:, :2] - static.points[:, :2]).max()))
        drift.append(float(np.abs(followed.points[:, :2] - [3 * t, 2 * t] - first).max()))
        p_static_all.append(p_static.probability)
        p_followed_all.append(p_followed.probability)
    assert s.detections == 1  # found once, followed for 23 frames
    # Tolerances: the static chain itself moves its points up to 6 px between these frames (the detector's box
    # jitters); MediaPipe's own landmarks-to-ROI rule settles on a 10 % larger crop, 4.4 px off and 0.15 off in
    # probability (mean), which these bounds refuse.
    assert max(drift) < 2.5, drift  # the followed face stays the first frame's face, moved
    assert np.median(per_frame) < 3.0, per_frame  # the parity test's door-frame tolerance
    # The same face moved: the static chain's answer jitters with its detector's box (about 0.1 around its median,
    # for the committed landmark head); the followed answer must stay within that jitter of the static one, and
    # jitter less itself.
    p_static_all, p_followed_all = np.array(p_static_all), np.array(p_followed_all)
    static_spread = np.mean(np.abs(p_static_all - np.median(p_static_all)))
    followed_spread = np.mean(np.abs(p_followed_all - np.median(p_followed_all)))
    gap = np.mean(np.abs(p_followed_all - p_static_all))
    assert gap < max(0.1, 1.25 * static_spread), (p_static_all, p_followed_all)
    assert followed_spread <= static_spread, (followed_spread, static_spread)


def test_the_door_follows_the_face_and_a_fault_starts_over():
    from toolkit.runtime.actuator import LogActuator
    from toolkit.runtime.camera import FrameSource
    from toolkit.runtime.core.config import DoorConfig, ModelConfig
    from toolkit.runtime.core.holder import ModelHolder
    from toolkit.runtime.door import DoorLoop

    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_facemesh_parity import prepare

    door = prepare(ROOT / "tests" / "fixtures" / "facemesh_parity", "door")
    frames = [np.roll(door, (2 * t, 3 * t), axis=(0, 1)) for t in range(3)]

    class Frames(FrameSource):
        def open(self) -> None:
            pass

        def read(self):
            return frames.pop(0) if frames else None

    loop = DoorLoop(ModelHolder(ModelConfig(FACE_EXPORT)), Frames(), DoorConfig(camera="x"), LogActuator())
    seen = []
    loop.watchers.append(lambda event, frame, box: seen.append(box))
    assert loop.step() and loop.step() and loop.step()
    stream = loop._stream[1]
    assert stream.detections == 1 and all(box is not None for box in seen)  # found once, then followed
    assert seen[2][0] == pytest.approx(seen[1][0] + 3, abs=1.5)  # the page's box moves with the followed face
    loop.fault("camera stalled")
    assert loop._stream is None  # the next frame is looked at afresh
