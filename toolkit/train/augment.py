"""Training-time augmentation, applied to batches in the tf.data pipeline (never inside the model,
so exported files carry no random layers). Each kind is switched on by name (``--augment flip,pca``).

The door camera's degradations (``lowres``, ``blur``, ``jpeg``, ``colorcast``) are the numpy operations of
:mod:`toolkit.degrade`, run through ``tf.numpy_function`` after the others: each image's draw comes from
(seed, epoch, batch index, place in the batch), so a rerun or a resumed run degrades the same images alike.
"""

from __future__ import annotations

import numpy as np

from toolkit._keras import keras, tf

PCA_STD = 0.1  # AlexNet: alpha ~ N(0, 0.1) per eigenvector
SHEAR = 0.15  # max horizontal shear, as a fraction of the height (about 8.5 degrees)


def pca_colour_basis(x: np.ndarray, max_pixels: int = 200_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of the RGB covariance of training pixels (scaled to 0-1).

    Args:
        x: uint8 images (N, H, W, 3); a random sample of ``max_pixels`` pixels is enough.
    """
    pixels = x.reshape(-1, 3)
    if len(pixels) > max_pixels:
        pixels = pixels[np.random.default_rng(seed).choice(len(pixels), max_pixels, replace=False)]
    cov = np.cov(pixels.astype(np.float64).T / 255.0)
    eigvals, eigvecs = np.linalg.eigh(cov)
    return eigvals.astype(np.float32), eigvecs.astype(np.float32)


def _shear(images, seed):
    t = tf()
    shape = t.shape(images)
    n, h = shape[0], t.cast(shape[1], t.float32)
    s = t.random.uniform((n,), -SHEAR, SHEAR, seed=seed)
    zeros, ones = t.zeros_like(s), t.ones_like(s)
    # Output (x, y) samples input (x + s * (y - h/2), y): a shear about the image centre.
    transforms = t.stack([ones, s, -s * h / 2.0, zeros, ones, zeros, zeros, zeros], axis=1)
    return t.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")


def _camera(kinds: tuple, seed: int, epoch):
    """The degradations among ``kinds`` as a graph function (float32 batch, batch index) -> batch, or None."""
    from toolkit.degrade import TRAIN_PROBABILITY, camera_kinds, degrade

    names = camera_kinds(kinds)
    if not names:
        return None
    t = tf()

    def run(images: np.ndarray, key: np.ndarray) -> np.ndarray:
        return degrade(images, names, seed, key=key.tolist(), p=TRAIN_PROBABILITY)

    def apply(images, index):
        current = epoch.read_value() if epoch is not None else t.constant(0, t.int64)
        key = t.stack([t.cast(current, t.int64), t.cast(index, t.int64)])
        out = t.numpy_function(run, [images, key], t.float32, stateful=False)
        out.set_shape(images.shape)
        return out

    return apply


def make_augmenter(kinds: tuple, seed: int, pca_basis: tuple[np.ndarray, np.ndarray] | None = None, epoch=None):
    """A function (float32 batch 0-255, batch index=0) -> augmented batch, or None when ``kinds`` is empty.

    ``epoch``: the trainer's epoch counter (:func:`toolkit.train.fit.epoch_counter`); the camera degradations
    draw afresh each epoch from it (without one, every epoch draws alike).
    """
    if not kinds:
        return None
    k, t = keras(), tf()
    camera = _camera(kinds, seed, epoch)
    layers = []
    if "flip" in kinds:
        layers.append(k.layers.RandomFlip("horizontal", seed=seed))
    if "rotate" in kinds:
        layers.append(k.layers.RandomRotation(15 / 360, fill_mode="reflect", seed=seed + 1))
    if "zoom" in kinds:  # zoom in/out plus a shift: random crops without changing the input size
        layers.append(k.layers.RandomZoom((-0.15, 0.15), fill_mode="reflect", seed=seed + 2))
        layers.append(k.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3))
    if "color" in kinds:
        layers.append(k.layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed + 4))
        layers.append(k.layers.RandomContrast(0.2, seed=seed + 5))
    if "pca" in kinds:
        if pca_basis is None:
            raise ValueError("pca augmentation needs the training set's colour basis")
        eigvals, eigvecs = (t.constant(a) for a in pca_basis)

    def augment(images, index=0):
        for layer in layers:
            images = layer(images, training=True)
        if "shear" in kinds:
            images = _shear(images, seed + 6)
        if "pca" in kinds:
            alpha = t.random.normal((t.shape(images)[0], 3), stddev=PCA_STD, seed=seed + 7)
            delta = t.linalg.matvec(eigvecs, alpha * eigvals) * 255.0  # (N, 3) RGB shift per image
            images = images + delta[:, None, None, :]
        images = t.clip_by_value(images, 0.0, 255.0)
        return camera(images, index) if camera is not None else images

    return augment

