"""Camera degradations: what a cheap door camera does to a face, as seeded numpy + Pillow operations.

A door camera sees a face about 20 pixels wide, upscaled and blurred, under a colour cast, saved as a
heavy JPEG. The same named operations degrade training batches (``--augment lowres,blur,...``), the
degraded copy ``toolkit benchmark --degrade`` scores, and int8 calibration images
(``--calibration-degrade``), so "degraded" means one thing everywhere. TensorFlow-free.

Every operation takes one uint8 (H, W, 3) image and a numpy Generator and returns a uint8 image of the
same shape; its strength is drawn from the generator, so a seed fixes the result.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable

import numpy as np

LOWRES_PIXELS = (16, 28)  # the short side a face is reduced to: ~20 px wide in a door frame
BLUR_SIGMA = (0.5, 1.5)  # Gaussian sigma in pixels of a 64-px image; scaled with the image size
JPEG_QUALITY = (10, 40)  # cheap cameras and snapshot uploads; Pillow's default is 75
COLORCAST_GAIN = 0.2  # per-channel gain in [0.8, 1.2]: a white-balance error
COLORCAST_GAMMA = 1.25  # gamma in [1/1.25, 1.25]: under- or over-exposed mid-tones
TRAIN_PROBABILITY = 0.5  # training and calibration: each operation on half the images, so clean ones remain


def lowres(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down to a short side of 16-28 px (area average, as a sensor bins) and back up (bilinear, as a resize does).

    An image already that small is returned unchanged.
    """
    from PIL import Image

    h, w = image.shape[:2]
    side = int(rng.integers(LOWRES_PIXELS[0], LOWRES_PIXELS[1] + 1))
    if min(h, w) <= side:
        return image
    scale = side / min(h, w)
    small = Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BILINEAR))


def blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur (an out-of-focus lens, an upscaled frame), sigma 0.5-1.5 px at 64 px."""
    from PIL import Image, ImageFilter

    sigma = float(rng.uniform(*BLUR_SIGMA)) * min(image.shape[:2]) / 64
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))


def jpeg(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A JPEG re-encode at quality 10-40 (Pillow's 4:2:0 chroma subsampling, as cameras use)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def colorcast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A white-balance error (a gain per channel) and an exposure error (one gamma), through a lookup table."""
    gains = 1 + rng.uniform(-COLORCAST_GAIN, COLORCAST_GAIN, 3)
    gamma = float(np.exp(rng.uniform(-np.log(COLORCAST_GAMMA), np.log(COLORCAST_GAMMA))))
    levels = (np.arange(256) / 255.0) ** gamma
    lut = np.clip(np.rint(255 * levels[None, :] * gains[:, None]), 0, 255).astype(np.uint8)  # (3, 256)
    return np.stack([lut[c][image[..., c]] for c in range(3)], axis=-1)


# Camera order: the scene's light is cast, the sensor samples it coarsely, the optics/upscale blur it,
# the encoder compresses it. Operations always run in this order, whatever order they are named in.
OPERATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "colorcast": colorcast,
    "lowres": lowres,
    "blur": blur,
    "jpeg": jpeg,
}
DEGRADATIONS = tuple(OPERATIONS)  # the names, declared once: config, benchmark and export import these


def camera_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """The degradation names among ``kinds`` (which may also hold other augmentations), in camera order."""
    wanted = set(kinds)
    return tuple(k for k in DEGRADATIONS if k in wanted)


def degrade_image(image: np.ndarray, kinds: Iterable[str], rng: np.random.Generator, p: float = 1.0) -> np.ndarray:
    """One uint8 (H, W, 3) image through each of ``kinds`` (each with probability ``p``), in camera order.

    Raises:
        ValueError: an unknown name, or an image that is not uint8 (H, W, 3).
    """
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in OPERATIONS]
    if unknown:
        raise ValueError(f"unknown degradation {unknown[0]!r}; choose from {', '.join(DEGRADATIONS)}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    for name in camera_kinds(kinds):
        # draw the strength even when skipped, so one operation's coin never shifts another's strength
        sub = np.random.default_rng(rng.integers(2**63))
        if rng.random() < p:
            image = OPERATIONS[name](image, sub)
    return np.ascontiguousarray(image)


def degrade(images: np.ndarray, kinds: Iterable[str], seed: int, *, key: Iterable[int] = (), p: float = 1.0
            ) -> np.ndarray:
    """A batch (N, H, W, 3) through :func:`degrade_image`; image i draws from ``(seed, *key, i)`` alone.

    Args:
        images: uint8, or float 0-255 (rounded to uint8 for the operations, returned as the same float dtype).
        kinds: degradation names (see :data:`DEGRADATIONS`).
        seed: the run's seed.
        key: more integers that pick a fresh draw, e.g. (epoch, batch index) in training.
        p: the probability of each operation per image (1: all of them, as the benchmark's degraded copy).

    Returns:
        the degraded batch, same shape and dtype.
    """
    images = np.asarray(images)
    as_uint8 = images if images.dtype == np.uint8 else np.clip(np.rint(images), 0, 255).astype(np.uint8)
    key = [int(k) for k in key]
    out = np.stack([degrade_image(img, kinds, np.random.default_rng([seed, *key, i]), p)
                    for i, img in enumerate(as_uint8)]) if len(as_uint8) else as_uint8.copy()
    return out if images.dtype == np.uint8 else out.astype(images.dtype)
