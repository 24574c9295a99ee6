"""The camera degradations: shape and dtype kept, seeded, and each one changes the image the way it says."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.degrade import DEGRADATIONS, OPERATIONS, camera_kinds, degrade, degrade_image


def _face(size: int = 64, seed: int = 0) -> np.ndarray:
    """A detailed uint8 image: smooth shading plus fine texture (the high frequencies lowres and blur remove)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 60 + 120 * np.stack([yy, xx, 1 - yy], axis=-1)
    texture = np.random.default_rng(seed).normal(0, 30, (size, size, 3))
    return np.clip(base + texture, 0, 255).astype(np.uint8)


def _high_frequency(image: np.ndarray) -> float:
    """Mean absolute difference between neighbouring pixels: large for texture, small for a smooth image."""
    x = image.astype(np.float64)
    return float(np.abs(np.diff(x, axis=0)).mean() + np.abs(np.diff(x, axis=1)).mean())


@pytest.mark.parametrize("name", DEGRADATIONS)
def test_each_operation_keeps_shape_and_dtype_and_is_seeded(name):
    image = _face()
    op = OPERATIONS[name]
    a = op(image, np.random.default_rng(3))
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, op(image, np.random.default_rng(3)))
    assert not np.array_equal(a, image)


def test_lowres_loses_high_frequencies_and_keeps_the_mean():
    image = _face()
    out = OPERATIONS["lowres"](image, np.random.default_rng(0))
    assert _high_frequency(out) < 0.5 * _high_frequency(image)
    assert abs(out.astype(float).mean() - image.astype(float).mean()) < 3


def test_lowres_leaves_an_image_already_that_small():
    image = _face(16)
    assert np.array_equal(OPERATIONS["lowres"](image, np.random.default_rng(0)), image)


def test_blur_smooths():
    image = _face()
    assert _high_frequency(OPERATIONS["blur"](image, np.random.default_rng(0))) < 0.7 * _high_frequency(image)


def test_jpeg_at_low_quality_loses_more_than_pillows_default():
    import io

    from PIL import Image

    image = _face()
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=75)
    default = np.asarray(Image.open(buf).convert("RGB")).astype(float)
    heavy = OPERATIONS["jpeg"](image, np.random.default_rng(0)).astype(float)
    assert np.abs(heavy - image).mean() > np.abs(default - image).mean()


def test_colorcast_shifts_channel_means_differently():
    image = np.full((32, 32, 3), 128, np.uint8)
    out = OPERATIONS["colorcast"](image, np.random.default_rng(1)).astype(float)
    means = out.reshape(-1, 3).mean(axis=0)
    assert np.ptp(means) > 5  # a grey image is no longer grey: the channels moved apart
    assert np.all(out.reshape(-1, 3) == out[0, 0])  # a lookup table: every equal pixel maps alike


def test_degrade_batch_is_seeded_per_image_and_keeps_float_dtype():
    x = np.stack([_face(seed=i) for i in range(4)])
    a = degrade(x, DEGRADATIONS, seed=5)
    assert a.shape == x.shape and a.dtype == np.uint8
    assert np.array_equal(a, degrade(x, DEGRADATIONS, seed=5))
    assert not np.array_equal(a, degrade(x, DEGRADATIONS, seed=6))
    assert not np.array_equal(a, degrade(x, DEGRADATIONS, seed=5, key=(1, 0)))  # another epoch, another draw
    # image i's draw depends on (seed, key, i) only, not on the rest of the batch
    assert np.array_equal(degrade(x[:2], DEGRADATIONS, seed=5), a[:2])
    f = degrade(x.astype(np.float32), DEGRADATIONS, seed=5)
    assert f.dtype == np.float32 and np.array_equal(f, a.astype(np.float32))


def test_probability_zero_leaves_images_alone_and_order_is_the_cameras():
    x = np.stack([_face(seed=i) for i in range(3)])
    assert np.array_equal(degrade(x, DEGRADATIONS, seed=0, p=0.0), x)
    assert camera_kinds(("jpeg", "flip", "colorcast")) == ("colorcast", "jpeg")
    shuffled = degrade(x, ("jpeg", "blur", "lowres", "colorcast"), seed=2)
    assert np.array_equal(shuffled, degrade(x, DEGRADATIONS, seed=2))


def test_half_probability_degrades_some_images_and_spares_others():
    x = np.stack([_face(seed=i) for i in range(40)])
    out = degrade(x, ("blur",), seed=0, p=0.5)
    changed = sum(not np.array_equal(a, b) for a, b in zip(out, x))
    assert 8 < changed < 32


def test_unknown_names_and_bad_images_are_refused():
    with pytest.raises(ValueError, match="unknown degradation 'sharpen'"):
        degrade_image(_face(), ("sharpen",), np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        degrade_image(_face().astype(np.float32), ("blur",), np.random.default_rng(0))


def test_every_option_takes_the_same_names():
    from toolkit.bench.config import BenchmarkConfig
    from toolkit.config import AUGMENTATIONS
    from toolkit.export.config import ExportConfig
    from toolkit.settings import meta

    assert set(DEGRADATIONS) <= set(AUGMENTATIONS)
    field = {f.name: f for f in ExportConfig.__dataclass_fields__.values()}["calibration_degrade"]
    assert meta(field)["choices"] == DEGRADATIONS
    assert ExportConfig(source="r", out="o", calibration_degrade=("jpeg",)).calibration_degrade == ("jpeg",)
    assert all(name in meta(BenchmarkConfig.__dataclass_fields__["degrade"])["help"] for name in DEGRADATIONS)
