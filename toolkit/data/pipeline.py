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


def make_tf_dataset(split, shuffle: bool = False, seed: int = 0, epoch=None, shard_hint: bool = False,
                    parallel: bool = True):
    """Build the dataset for ``split`` (see :meth:`Split.tf_dataset`).

    ``shard_hint``: multi-worker training; a streamed split's file list is sharded where tf.data's HINT
    auto-shard policy fills in (workers, index), so each worker decodes only its own files.
    ``parallel``: decode streamed files with a parallel map (see :func:`map_parallelism` for when not).
    """
    tf = _tf()
    h, w = split.image_size
    y = split.y.astype(np.int32)
    if not split.streamed:
        x, _ = split.numpy()
        return _items(tf, (x, y), shuffle and len(split) > 0, seed, epoch)

    # os.fsencode/fsdecode round-trip any file name, including non-ASCII ones.
    paths = tf.constant([os.fsencode(p) for p in split.paths], dtype=tf.string, shape=(len(split),))
    # Shuffling file names costs nothing; shuffling decoded images would need a buffer of pixels.
    ds = _items(tf, (paths, y), shuffle and len(split) > 0, seed, epoch)
    if shard_hint:  # after the shuffle: every epoch deals the files out afresh
        ds = ds.shard(tf.data.experimental.SHARD_HINT, tf.data.experimental.SHARD_HINT)

    def _decode(path: bytes) -> np.ndarray:
        return decode_image(os.fsdecode(path), (h, w))

    def _load(path, label):
        image = tf.numpy_function(_decode, [path], tf.uint8, stateful=False)
        image.set_shape((h, w, 3))
        return image, label

    # deterministic=True keeps the element order fixed for a given seed, so runs repeat.
    return ds.map(_load, num_parallel_calls=tf.data.AUTOTUNE if parallel else None, deterministic=True)


def map_parallelism(epoch, deterministic: bool) -> bool:
    """Whether a training stream's maps should run in parallel: not under op determinism with an ``epoch``.

    Under op determinism, tf.data's ``make_deterministic`` rewrite turns every parallel map of a dataset
    whose functions read TensorFlow state (the ``epoch`` variable does) into a plain map, so those maps run
    one element at a time anyway. TensorFlow 2.21's rewrite keeps the parallel map's
    ``use_unbounded_threadpool`` attribute, which the plain map lacks, and logs ``E0000 ... NodeDef mentions
    attribute use_unbounded_threadpool`` for every iterator: noise a user reads as an error. Building the
    plain map ourselves runs the same pipeline without that line.
    """
    return not (deterministic and epoch is not None)


def _items(tf, arrays: tuple, shuffle: bool, seed: int, epoch):
    """A dataset of ``arrays``' rows, fully shuffled when asked.

    With an ``epoch`` variable, epoch e's order is a permutation drawn from (seed, e) alone. tf.data's
    own reshuffling draws each epoch's order from a generator that starts afresh in every process, so
    a resumed run would replay epoch 0's order. The permutation is drawn when an epoch's iterator first
    reads, after the trainer has set ``epoch`` for that epoch.
    """
    if not shuffle:
        return tf.data.Dataset.from_tensor_slices(arrays)
    n = len(arrays[-1])
    if epoch is None:
        return tf.data.Dataset.from_tensor_slices(arrays).shuffle(n, seed=seed, reshuffle_each_iteration=True)
    tensors = tuple(tf.convert_to_tensor(a) for a in arrays)

    def order(_):
        key = tf.stack([tf.constant(seed, tf.int64), epoch.read_value()])
        return tf.data.Dataset.from_tensor_slices(tf.random.experimental.stateless_shuffle(tf.range(n), seed=key))

    indices = tf.data.Dataset.from_tensors(0).flat_map(order).apply(tf.data.experimental.assert_cardinality(n))
    return indices.map(lambda i: tuple(tf.gather(t, i) for t in tensors))
