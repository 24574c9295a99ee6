"""The door with a face-landmark export (exported/happy-face): one detector pass per frame inside the chain, the
face box from the answer for the page, no face a vote against (never a guess)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from toolkit.runtime.actuator import LogActuator
from toolkit.runtime.camera import FrameSource, make_cropper
from toolkit.runtime.core.config import DoorConfig, ModelConfig
from toolkit.runtime.core.holder import ModelHolder
from toolkit.runtime.door import DoorLoop

ROOT = Path(__file__).resolve().parents[2]
FACE_EXPORT = ROOT / "exported" / "happy-face"


class Frames(FrameSource):
    def __init__(self, frames) -> None:
        self.frames = list(frames)

    def open(self) -> None:
        pass

    def read(self):
        return self.frames.pop(0) if self.frames else None


def test_the_door_draws_the_chains_face_box_and_counts_no_face_as_no_vote():
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_facemesh_parity import prepare

    assert make_cropper(None, FACE_EXPORT) is None  # the chain finds the face: no second detector pass
    face_frame = prepare(ROOT / "tests" / "fixtures" / "facemesh_parity", "door")
    empty = np.full((480, 640, 3), 90, np.uint8)
    loop = DoorLoop(ModelHolder(ModelConfig(FACE_EXPORT)), Frames([face_frame, empty]), DoorConfig(camera="x"),
                    LogActuator())  # fmt: skip
    seen = []
    loop.watchers.append(lambda event, frame, box: seen.append((event["probability"], box)))
    assert loop.step() and loop.step()
    (p, box), (p_empty, box_empty) = seen
    assert p is not None and 0.0 <= p <= 1.0
    x0, y0, x1, y1 = box
    assert 192 < x0 < x1 < 448 and 112 < y0 < y1 < 368  # the face inside the pasted photo
    assert p_empty is None and box_empty is None  # no face: no probability, no box (not the last frame's)
