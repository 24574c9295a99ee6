"""The hand features a head reads (toolkit.inference.handfeatures): what they ignore, what they keep, and the
version a run or an export records. Landmark arrays only: no tracker, no TensorFlow."""

from __future__ import annotations

import types

import numpy as np
import pytest

from toolkit.errors import ToolkitError
from toolkit.inference import hands as H
from toolkit.inference.handfeatures import ANGLES_DIM, POINTS_DIM, SETS, FeatureSpec, hand_vector, hand_vectors

SPECS = [FeatureSpec(s, o) for s in SETS for o in ("upright", "kept")]


def hand_points(seed: int) -> np.ndarray:
    """A plausible hand in image pixels: a wrist, then 5 fingers of 4 points fanning out upwards, with noise."""
    rng = np.random.default_rng(seed)
    pts = [np.array([100.0, 200.0, 0.0])]
    for angle in np.linspace(-0.9, 0.6, 5):
        base = pts[0] + [40 * np.sin(angle), -40 * np.cos(angle), 0]
        bend = rng.uniform(-0.8, 0.8)
        for j in range(4):
            a = angle + bend * j / 3
            pts.append(base + j * 18 * np.array([np.sin(a), -np.cos(a), rng.uniform(-0.3, 0.3)]))
    return np.asarray(pts) + rng.normal(0, 1.5, (21, 3))


def turned(points: np.ndarray, angle: float, about=(120.0, 150.0)) -> np.ndarray:
    """The points turned by ``angle`` radians in the image plane about ``about`` (z unchanged)."""
    c, s = np.cos(angle), np.sin(angle)
    out = points.copy()
    out[:, :2] = (points[:, :2] - about) @ np.array([[c, s], [-s, c]]) + about
    return out


def mirrored(points: np.ndarray, width: float = 640.0) -> np.ndarray:
    out = points.copy()
    out[:, 0] = width - out[:, 0]
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("set_", list(SETS))
def test_upright_features_ignore_angle_position_size_and_mirroring(seed, set_):
    spec = FeatureSpec(set_)
    p = hand_points(seed)
    f = hand_vector(p, False, spec)
    assert f.shape == (SETS[set_],) and f.dtype == np.float32 and np.isfinite(f).all()
    rng = np.random.default_rng(seed + 10)
    for angle in rng.uniform(-np.pi, np.pi, 5):
        moved = turned(p, angle) * 2.5 + [30, -12, 0]  # turned, scaled (z too) and moved
        np.testing.assert_allclose(hand_vector(moved, False, spec), f, atol=2e-5)
        # a mirror image (a selfie camera, the other hand) labelled as the other hand: the same sign
        np.testing.assert_allclose(hand_vector(mirrored(moved), True, spec), f, atol=2e-5)
    assert not np.allclose(hand_vector(mirrored(p), False, spec), f, atol=1e-3)  # the label says which to mirror
    up = f[:POINTS_DIM].reshape(21, 3)
    np.testing.assert_allclose(up[9, :2], [0, -1], atol=1e-6)  # the middle knuckle straight above the wrist


@pytest.mark.parametrize("set_", list(SETS))
def test_kept_orientation_tells_a_turned_hand_apart(set_):
    """Thumbs up vs thumbs down: the same shape turned by 180 degrees must stay two signs."""
    spec = FeatureSpec(set_, "kept")
    p = hand_points(1)
    f = hand_vector(p, False, spec)
    down = hand_vector(turned(p, np.pi), False, spec)
    assert np.abs(down[:POINTS_DIM] - f[:POINTS_DIM]).max() > 1.0
    np.testing.assert_allclose(hand_vector(p * 3 + [5, 5, 0], False, spec), f, atol=2e-5)  # still no position/size
    np.testing.assert_allclose(hand_vector(mirrored(p), True, spec), f, atol=2e-5)  # still either hand
    assert np.abs(hand_vector(turned(p, np.pi), False, FeatureSpec(set_)) - hand_vector(p, False, FeatureSpec(set_))
                  ).max() < 2e-5  # upright: the two are one


def test_kept_points_are_the_former_features():
    """``kept`` points = the features of FEATURE_VERSION hands-2: relative to the wrist, scaled by the 2-D
    wrist-to-middle-knuckle distance, x mirrored for left hands."""
    p = hand_points(2)
    old = (p - p[0]) / np.hypot(*(p[9, :2] - p[0, :2]))
    np.testing.assert_allclose(hand_vector(p, False, FeatureSpec("points", "kept")), old.reshape(-1), atol=1e-6)
    old[:, 0] *= -1
    np.testing.assert_allclose(hand_vector(p, True, FeatureSpec("points", "kept")), old.reshape(-1), atol=1e-6)


def test_angles_block_cosines_and_distances():
    """A straight finger bends by cos 1; the block is the same in both orientations; sets are column prefixes."""
    p = hand_points(3)
    p[5:9] = p[0] + np.outer(np.arange(1, 5), [0, -20, 0])  # the index finger straight up from the wrist
    full = hand_vector(p, False, FeatureSpec("points+angles"))
    angles = full[POINTS_DIM:]
    assert len(angles) == ANGLES_DIM == 30
    np.testing.assert_allclose(angles[3:6], 1.0, atol=1e-6)  # index finger: cosines of its 3 joints
    scale = np.hypot(*(p[9, :2] - p[0, :2]))
    tip_wrist = np.linalg.norm(p[[4, 8, 12, 16, 20]] - p[0], axis=1) / scale
    np.testing.assert_allclose(angles[-5:], tip_wrist, rtol=1e-5)
    np.testing.assert_allclose(hand_vector(p, False, FeatureSpec("points+angles", "kept"))[POINTS_DIM:], angles,
                               atol=1e-6)
    np.testing.assert_array_equal(full[:POINTS_DIM], hand_vector(p, False, FeatureSpec("points")))
    batch = hand_vectors(np.stack([p, mirrored(p)]), np.array([False, True]), FeatureSpec("points+angles"))
    np.testing.assert_allclose(batch, np.stack([full, full]), atol=2e-5)


def test_degenerate_hands_stay_finite_and_features_of_a_hand():
    for spec in SPECS:
        assert np.isfinite(hand_vector(np.zeros((21, 3)), False, spec)).all()
    p = hand_points(0)
    hand = H.Hand(p.astype(np.float32), 0.9, "left", 0.9)
    np.testing.assert_array_equal(H.features(hand), hand_vector(p.astype(np.float32), True, FeatureSpec()))
    assert H.features(hand, FeatureSpec("points+angles")).shape == (93,)


def test_records_and_refusal_of_another_feature_version():
    rec = FeatureSpec("points+angles", "kept").record()
    assert rec == {"version": H.FEATURE_VERSION, "set": "points+angles", "orientation": "kept", "dim": 93}
    assert FeatureSpec.from_record({"features": rec}, "x/manifest.json") == FeatureSpec("points+angles", "kept")
    old = {"feature_version": "hands-2"}  # a manifest or run from before the features were turned upright
    with pytest.raises(ToolkitError, match=r"^x/manifest.json: the head reads hand features hands-2, this toolkit "
                                           r"computes hands-4; run 'toolkit finetune hands' and 'toolkit export'"):
        FeatureSpec.from_record(old, "x/manifest.json")
    with pytest.raises(ToolkitError, match="of an older toolkit"):
        FeatureSpec.from_record({}, "x/manifest.json")
    with pytest.raises(ToolkitError, match="hands.features.*orientation"):
        FeatureSpec.from_record({"features": {**rec, "orientation": "sideways"}}, "x/manifest.json")
    with pytest.raises(ToolkitError, match="hands.features.dim"):
        FeatureSpec.from_record({"features": {**rec, "dim": 63}}, "x/manifest.json")


def test_keep_orientation_is_a_hands_setting():
    from toolkit.config import FinetuneConfig
    from toolkit.settings import SettingError

    assert FinetuneConfig(model="hands", data="d", out="o", keep_orientation=True).keep_orientation
    with pytest.raises(SettingError, match="hands base only"):
        FinetuneConfig(model="resnet50", data="d", out="o", keep_orientation=True)


def test_export_refuses_a_run_fitted_on_other_features(tmp_path):
    from toolkit.export.hands import export_hands

    run = types.SimpleNamespace(path=tmp_path / "run", config={"hands": {"feature_version": "hands-2"}})
    config = types.SimpleNamespace(out=str(tmp_path / "exp"), overwrite=False, formats=("onnx",), quantize=("none",))
    with pytest.raises(ToolkitError, match=r"run/config.json: the head reads hand features hands-2, this toolkit"):
        export_hands(run, None, config, log=lambda m: None)
    assert not (tmp_path / "exp").exists()
