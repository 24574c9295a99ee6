"""Turn a :class:`~toolkit.data.split.Split` into an unbatched ``tf.data.Dataset``.

The trainer batches, augments and prefetches; here we only produce (uint8 HxWx3, int32 label)
elements. Streamed splits keep file paths in the graph and decode with :func:`toolkit.images.decode_image`
through ``tf.numpy_function``, so training sees exactly the pixels the door runtime will see.
"""

from __future__ import annotations

import os

import numpy as np

from toolkit._keras import tf as _tf
from toolkit.images import decode_image


def make_tf_dataset(split, shuffle: bool = False, seed: int = 0):
    """Build the dataset for ``split`` (see :meth:`Split.tf_dataset`)."""
    tf = _tf()
    h, w = split.image_size
    y = split.y.astype(np.int32)
    if not split.streamed:
        x, _ = split.numpy()
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle and len(split):
            ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
        return ds

    # os.fsencode/fsdecode round-trip any file name, including non-ASCII ones.
    paths = tf.constant([os.fsencode(p) for p in split.paths], dtype=tf.string, shape=(len(split),))
    ds = tf.data.Dataset.from_tensor_slices((paths, y))
    if shuffle and len(split):
        # Shuffling file names costs nothing; shuffling decoded images would need a buffer of pixels.
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)

    def _decode(path: bytes) -> np.ndarray:
        return decode_image(os.fsdecode(path), (h, w))

    def _load(path, label):
        image = tf.numpy_function(_decode, [path], tf.uint8, stateful=False)
        image.set_shape((h, w, 3))
        return image, label

    # deterministic=True keeps the element order fixed for a given seed, so runs repeat.
    return ds.map(_load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
