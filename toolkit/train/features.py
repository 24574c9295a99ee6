"""Penultimate-feature cache: run a frozen base once, then train only the head on its stored outputs.

A cache entry holds one split's features as a memory-mapped ``.npy`` file, so neither writing nor
training on them needs the whole array in RAM. Entries are keyed by everything that determines the
features: the base's architecture and weights, the layer, the input size and the split's data
fingerprint. Each entry is written into a temporary folder and renamed into place only when complete,
so a killed run never leaves an entry that a later run would trust.

```
$TOOLKIT_CACHE (default ~/.cache/toolkit/features)/
  <key>/  features.npy (N, D) float32   labels.npy (N,) int64   meta.json
  .tmp-<key>-<pid>-<rand>/              an entry being written (ignored; removed by `toolkit cache clear`)
```
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit import metrics
from toolkit._keras import predict_array, tf
from toolkit.errors import ToolkitError, disk_full_error
from toolkit.inference.cache import CACHE_ENV
from toolkit.inference.cache import features_root as cache_root
from toolkit.progress import progress

log = logging.getLogger("toolkit.features")
FORMAT = 1  # bump when the entry layout or the feature computation changes: old entries stop matching
META = "meta.json"
_KEY = re.compile(r"[0-9a-f]{32}")  # an entry's folder name (see feature_key)


@dataclass
class CachedFeatures:
    """One split's cached features: ``x`` (N, D) float32 and ``y`` (N,) int64, memory-mapped read-only."""

    key: str
    path: Path
    x: np.ndarray
    y: np.ndarray
    hit: bool  # True: read from the cache, the base did not run

    def __len__(self) -> int:
        return len(self.y)


def base_model(model, layer: str):
    """The model up to and including ``layer`` (shares the layers, so it sees the same weights)."""
    from toolkit._keras import keras

    return keras().Model(model.input, model.get_layer(layer).output, name=f"{model.name}_base")


def base_hash(base) -> str:
    """sha256 over the base's architecture (layer types and settings, in order) and every weight array.

    Auto-generated layer names (``activation_12``) differ between two builds of the same model in one
    process, so names are left out: the order of layers and weights identifies them instead.
    """
    layers = [(type(la).__name__, {k: v for k, v in la.get_config().items() if k != "name"}) for la in base.layers]
    h = hashlib.sha256(json.dumps(layers, sort_keys=True, default=str).encode())
    for layer in base.layers:
        for w in layer.weights:
            h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()


def feature_key(weights_hash: str, layer: str, image_size, fingerprint: str) -> str:
    """The cache key of one split's features; any change to an input gives another key."""
    fields = {"format": FORMAT, "base": weights_hash, "layer": layer, "size": list(image_size), "data": fingerprint}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def cache_features(base, split, *, weights_hash: str, layer: str, batch_size: int = 64,
                   root: Path | None = None, dist=None, scratch: Path | None = None) -> CachedFeatures:
    """Return ``split``'s features from the cache, computing and storing them first if absent.

    Under multiworker ``dist`` every worker calls this: the cache is read only if every worker has the
    entry (a cache folder they share, or an earlier run); otherwise each worker computes every
    ``workers``-th image, all shares are exchanged, and the chief stores the assembled entry. The other
    workers keep their assembled copy in ``scratch`` (their private folder) and write no cache entry.

    Args:
        base: the frozen base (see :func:`base_model`); called in inference mode, without augmentation.
        split: a :class:`toolkit.data.split.Split`; streamed splits are decoded batch by batch.
        weights_hash: :func:`base_hash` of ``base`` (computed once by the caller for all splits).
        layer: the penultimate layer's name (part of the key).
        batch_size: images per forward pass; memory use is bounded by it, not by the split's size.
        root: the cache folder (default :func:`cache_root`).
        dist: the run's :class:`toolkit.train.distribute.Distribution`, if any.
        scratch: where a non-chief worker keeps the features (required with a multiworker ``dist``).
    """
    root = Path(root) if root is not None else cache_root()
    key = feature_key(weights_hash, layer, split.image_size, split.fingerprint)
    entry = root / key
    cached = open_entry(entry, key, len(split))
    together = dist is not None and dist.multiworker
    if together and not dist.all_agree(cached is not None):
        cached = None
        if not dist.is_chief:
            folder = Path(scratch) / key
            folder.mkdir(parents=True, exist_ok=True)
            _compute_shared(base, split, folder, batch_size, dist)
            return CachedFeatures(key, folder, np.load(folder / "features.npy", mmap_mode="r"),
                                  np.load(folder / "labels.npy", mmap_mode="r"), hit=False)
    if cached is not None:
        log.info("%s features (%d images): from the cache %s, no base computation", split.name, len(split), key[:12])
        return cached
    def fill(tmp: Path) -> dict:
        if together:  # every worker computes its share; the chief stores the assembled entry
            seconds = _compute_shared(base, split, tmp, batch_size, dist)
        else:
            seconds = _compute(base, split, tmp, batch_size)
        return {"key": key, "layer": layer, "split": split.name, "n": len(split), "dim": int(base.output_shape[-1]),
                "image_size": list(split.image_size), "fingerprint": split.fingerprint, "base": weights_hash,
                "model": base.name, "seconds": seconds, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}

    seconds = store_entry(root, key, fill)["seconds"]
    log.info("%s features (%d images): computed in %.1f s and cached as %s", split.name, len(split), seconds, key[:12])
    opened = open_entry(entry, key, len(split))
    if opened is None:
        raise ToolkitError(f"{entry}: feature cache entry unreadable right after writing it; check the disk")
    opened.hit = False
    return opened


def store_entry(root: Path, key: str, fill: Callable[[Path], dict]) -> dict:
    """Write the cache entry ``key`` under ``root`` whole or not at all; returns its meta fields.

    ``fill(folder)`` writes the entry's arrays into a temporary folder and returns the fields of its
    ``meta.json``, which is written last (an entry without it is never trusted); the folder is then renamed
    into place. A failure leaves nothing behind; a full disk is one line naming the cache.
    """
    root.mkdir(parents=True, exist_ok=True)
    remove_unfinished(root)
    entry = root / key
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{key}-{os.getpid()}-"))
    try:
        meta = fill(tmp)
        (tmp / META).write_text(json.dumps(meta, indent=2))  # last: an entry without meta is never trusted
        if entry.exists() and not (entry / META).is_file():  # an entry nobody trusts: make room
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:  # another run stored the same entry first; theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_full_error(exc, str(root), f"the cache keeps its complete entries; free some space (or set "
                               f"${CACHE_ENV} to another disk) and run again") if isinstance(exc, Exception) else None
        if full is not None:
            raise full from exc
        raise
    return meta


def remove_unfinished(root: Path) -> int:
    """Delete entries that killed runs left half-written (their writer's process is gone); returns how many."""
    removed = 0
    for tmp in root.glob(".tmp-*"):
        parts = tmp.name.split("-")  # .tmp, key, pid, random
        pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None
        if pid is not None and _running(pid):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed += 1
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # base -> its one traced graph


def _graph(base, batch):
    """The base in inference mode (frozen BN) as one graph traced once, with any batch size, for every split.

    Keras' predict_on_batch traced again for every new batch shape (each split's last batch) and every cut of
    ``--feature-layer a,b,c``, and TensorFlow then warned twice about excessive retracing.
    """
    graph = _GRAPHS.get(base)
    if graph is None:
        t = tf()
        spec = t.TensorSpec([None, *batch.shape[1:]], batch.dtype)
        graph = _GRAPHS[base] = t.function(lambda images: base(images, training=False), input_signature=[spec])
    return graph


def _compute(base, split, folder: Path, batch_size: int) -> float:
    """Stream the split through the base into memory-mapped files; returns seconds spent."""
    from toolkit.train.fit import batches

    t0 = time.perf_counter()
    dim = int(base.output_shape[-1])
    x = _open_reserved(folder / "features.npy", np.float32, (len(split), dim))
    y = _open_reserved(folder / "labels.npy", np.int64, (len(split),))
    i = 0
    with progress(f"caching {split.name} features", total=len(split)) as shown:
        for xb, yb in batches(split, batch_size):  # no shuffle, no augmentation: features of the images as they are
            out = np.asarray(_graph(base, xb)(xb), dtype=np.float32).reshape(len(yb), dim)
            x[i:i + len(out)] = out
            y[i:i + len(out)] = yb.numpy()
            i += len(out)
            shown.advance(len(out))
    if i != len(split):
        raise ToolkitError(f"{split.name} split: {i} of {len(split)} images reached the base; was the data changed?")
    x.flush()
    y.flush()
    del x, y
    return time.perf_counter() - t0


def _open_reserved(path: Path, dtype, shape: tuple):
    """A writable .npy memory map whose disk blocks are allocated up front.

    A memory map over a sparse file fails on a full disk with SIGBUS at the first write to an unbacked
    page, which kills the process without a word; allocating first turns that into an OSError here.
    """
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system that cannot reserve
                    del arr
                    raise
    return arr


def _compute_shared(base, split, folder: Path, batch_size: int, dist, chunk_bytes: int = 1 << 22) -> float:
    """Each worker runs the base on images index, index + workers, ...; the shares are exchanged in chunks
    of about ``chunk_bytes`` per worker and every worker writes the whole (N, D) array into ``folder``."""
    t0 = time.perf_counter()
    n, w = len(split), dist.workers
    dim = int(base.output_shape[-1])
    share = tempfile.mkdtemp(dir=folder, prefix=".share-")
    mine = np.arange(dist.index, n, w)
    if len(mine):
        _compute(base, split.subset(mine), Path(share), batch_size)
        part = np.load(Path(share) / "features.npy", mmap_mode="r")
    else:  # more workers than images
        part = np.zeros((0, dim), np.float32)
    x = _open_reserved(folder / "features.npy", np.float32, (n, dim))
    y = _open_reserved(folder / "labels.npy", np.int64, (n,))
    y[:] = split.y  # labels are known everywhere: only features travel
    rows = max(1, chunk_bytes // (4 * dim))
    for start in range(0, -(-n // w), rows):
        block = np.zeros((rows, dim), np.float32)
        got = part[start:start + rows]
        block[:len(got)] = got
        shares = dist.exchange(block)  # (workers, rows, dim)
        for k in range(w):
            idx = np.arange(k, n, w)[start:start + rows]
            x[idx] = shares[k, :len(idx)]
    x.flush()
    y.flush()
    del x, y, part
    shutil.rmtree(share, ignore_errors=True)
    return time.perf_counter() - t0


def open_entry(entry: Path, key: str, n: int) -> CachedFeatures | None:
    """The finished cache entry ``entry`` of ``n`` items, memory-mapped; None when absent, or when damaged or of
    another size (then it is deleted, so the caller computes it again)."""
    if not (entry / META).is_file():
        return None
    try:
        x = np.load(entry / "features.npy", mmap_mode="r")
        y = np.load(entry / "labels.npy", mmap_mode="r")
    except (OSError, ValueError):
        log.warning("%s: damaged feature cache entry; computing again", entry)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    if len(x) != n or len(y) != n or x.ndim != 2 or y.ndim != 1:
        log.warning("%s: feature cache entry holds %d items, expected %d; computing again", entry, len(y), n)
        del x, y
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return CachedFeatures(key, entry, x, y, hit=True)


def feature_batches(features: CachedFeatures, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                    epoch=None):
    """A tf.data pipeline over cached features that reads one batch at a time from the memory map.

    ``epoch`` (see :func:`toolkit.train.fit.epoch_counter`) makes each epoch's order depend on the seed
    and the epoch number alone, so a resumed run sees the same batches; without it epochs count up from 0.
    """
    from toolkit._keras import tf

    t = tf()
    n, dim = features.x.shape
    calls = [0]

    def gen():
        # A new permutation each epoch, repeatable from the seed; sorted per batch for sequential reads.
        e = int(epoch.numpy()) if epoch is not None else calls[0]
        calls[0] += 1
        order = np.random.default_rng(seed + e).permutation(n) if shuffle else np.arange(n)
        for s in range(0, n, batch_size):
            idx = np.sort(order[s:s + batch_size])
            yield np.asarray(features.x[idx]), np.asarray(features.y[idx], dtype=np.int32)

    sig = (t.TensorSpec((None, dim), t.float32), t.TensorSpec((None,), t.int32))
    return t.data.Dataset.from_generator(gen, output_signature=sig).prefetch(2)


def head_layers(model, penultimate: str) -> list:
    """The layers after ``penultimate`` in ``model.layers`` order: the classifier head that is replaced."""
    names = [layer.name for layer in model.layers]
    return model.layers[names.index(penultimate) + 1:]


def build_head(model, penultimate: str):
    """A standalone copy of the model's head taking penultimate features, with the same names and weights."""
    from toolkit._keras import keras

    k = keras()
    inp = k.Input(shape=model.get_layer(penultimate).output_shape[1:], name="features")
    x = inp
    layers = head_layers(model, penultimate)
    for layer in layers:
        x = type(layer).from_config(layer.get_config())(x)
    head = k.Model(inp, x, name="head")
    for layer in layers:  # start where the full model starts, so both training paths are comparable
        head.get_layer(layer.name).set_weights(layer.get_weights())
    return head


def assemble(model, head) -> None:
    """Copy a trained head's weights into ``model``'s own head layers: base + head as one flat model."""
    for layer in head.layers[1:]:
        model.get_layer(layer.name).set_weights(layer.get_weights())


def evaluate_features(head, features: CachedFeatures, labels: tuple) -> dict:
    """The same report as ``evaluate_model`` on images, computed from cached features by the head alone."""
    probs = metrics.as_class_probs(predict_array(head, np.asarray(features.x), 256))
    report = metrics.classification_report(np.asarray(features.y), probs, labels)
    report["tta"] = False
    if len(labels) == 2:
        report["thresholds"] = metrics.threshold_table(probs[:, 1], np.asarray(features.y) == 1)
    return report


def list_cache(root: Path | None = None) -> list[dict]:
    """Every complete entry's metadata plus its size on disk; unfinished temp folders are listed as such."""
    root = Path(root) if root is not None else cache_root()
    rows = []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if not (_KEY.fullmatch(entry.name) or entry.name.startswith(".tmp-")):
            continue  # not an entry: e.g. weights/ (toolkit.models.fetch keeps downloaded bases there)
        size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        meta = {}
        if (entry / META).is_file():
            try:
                meta = json.loads((entry / META).read_text())
            except (OSError, json.JSONDecodeError):
                meta = {}
        rows.append({"key": entry.name, "bytes": size, "complete": bool(meta), **meta})
    return rows


def clear_cache(root: Path | None = None) -> tuple[int, int]:
    """Delete every entry (and unfinished temp folders) -> (entries removed, bytes freed)."""
    rows = list_cache(root)
    root = Path(root) if root is not None else cache_root()
    for row in rows:
        shutil.rmtree(root / row["key"], ignore_errors=True)
    return len(rows), sum(r["bytes"] for r in rows)
