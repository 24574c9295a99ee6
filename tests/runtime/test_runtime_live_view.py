"""The page's live view (TF-free): a frame copied at most every LIVE_EVERY_SECONDS, drawn at most LIVE_MAX_WIDTH
wide with the box where the face is, and one encode per copied frame however many viewers ask."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
from PIL import Image

from toolkit.runtime.status import LIVE_EVERY_SECONDS, LIVE_MAX_WIDTH, DoorStatus


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _status(clock: Clock) -> DoorStatus:
    door = SimpleNamespace(watchers=[], policy=SimpleNamespace(fault=None, threshold=0.5),
                           config=SimpleNamespace(policy=SimpleNamespace(k=3, n=5)))  # fmt: skip
    return DoorStatus(door, holder=None, clock=clock)


def test_frames_are_copied_and_encoded_at_most_every_live_interval():
    clock = Clock()
    status = _status(clock)
    assert status.live_jpeg() is None  # nothing seen yet; this request also marks a viewer
    frame = np.zeros((48, 64, 3), np.uint8)
    images = []
    for i in range(30):  # 3 s of a 10 frames/s camera, four viewers asking at every frame
        clock.now = 0.1 * i
        frame[:] = i  # a different picture each frame
        status.observe({"time": clock.now, "probability": 0.2}, frame, None)
        images += [status.live_jpeg() for _ in range(4)]
    distinct = {id(b) for b in images}
    assert 3 / LIVE_EVERY_SECONDS - 1 <= len(distinct) <= 3 / LIVE_EVERY_SECONDS + 1, len(distinct)
    # the loop's buffer is copied, not kept: changing it afterwards does not change the picture served
    frame[:] = 255
    assert np.asarray(Image.open(io.BytesIO(images[-1]))).mean() < 100


def test_a_wide_frame_is_drawn_smaller_with_the_box_where_the_face_is():
    clock = Clock()
    status = _status(clock)
    status.live_jpeg()
    status.observe({"time": 0.0, "probability": 0.9}, np.full((720, 1280, 3), 128, np.uint8), (400, 200, 600, 400))
    image = np.asarray(Image.open(io.BytesIO(status.live_jpeg())).convert("RGB")).astype(int)
    assert image.shape == (360, 640, 3) and image.shape[1] <= LIVE_MAX_WIDTH
    left_edge = image[150, 201]  # the box's left side, halved: green (the probability is over the threshold)
    assert left_edge[1] > left_edge[0] + 60 and left_edge[1] > left_edge[2] + 60, left_edge
    assert abs(image[150, 250] - 128).max() < 20  # inside the box: the frame, untouched
