"""The hands benchmark's stand-in camera (benchmarks.hands_camera): what it does to the test photos."""

from __future__ import annotations

import numpy as np

from benchmarks.hands_camera import camera_sets, turn


def _photos(n=3, size=32):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)


def test_turn_is_a_whole_turn_resized_back_and_mirror_is_left_right():
    x = _photos(1)[0]
    np.testing.assert_array_equal(turn(x, 0, False), x)
    np.testing.assert_array_equal(turn(x, 0, True), x[:, ::-1])
    np.testing.assert_array_equal(turn(x, 90, False), np.rot90(x))  # counter-clockwise, nothing cut off
    tilted = turn(x, 30, False)
    assert tilted.shape == x.shape and not np.array_equal(tilted, x)


def test_camera_sets_are_seeded_and_keep_labels_order():
    x = _photos()
    a, b = camera_sets(x, seed=3), camera_sets(x, seed=3)
    assert list(a) == ["clean", "turned", "mirrored", "turned+mirrored"]
    assert all(v.shape == x.shape and v.dtype == np.uint8 for v in a.values())
    np.testing.assert_array_equal(a["mirrored"], x[:, :, ::-1])
    np.testing.assert_array_equal(a["turned"], b["turned"])
    np.testing.assert_array_equal(a["turned+mirrored"], a["turned"][:, :, ::-1])
    assert not np.array_equal(camera_sets(x, seed=4)["turned"], a["turned"])
