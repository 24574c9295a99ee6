"""Stratified, duplicate-aware, deterministic splits, and the :class:`Split` container."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.images import decode_files


class Split:
    """One named part of a dataset: labels plus pixels in memory, or file paths decoded on the fly.

    Args:
        name: "train", "val", "test" or "all".
        labels: class names; ``labels[y[i]]`` is the class of item i.
        y: int64 labels, shape (N,).
        image_size: (height, width) of every decoded image.
        x: uint8 pixels (N, H, W, 3) for in-memory splits.
        paths: file paths for streamed splits (exactly one of ``x`` and ``paths``).
        digests: sha256 digest of each file (streamed splits; the fingerprint is built from them).
        groups: items with the same group id are identical and must land in the same split.
        names: a readable name per item (e.g. "5/IMG_1.JPG") for in-memory splits read from files.
    """

    def __init__(
        self,
        name: str,
        labels: tuple[str, ...],
        y: np.ndarray,
        image_size: tuple[int, int],
        *,
        x: np.ndarray | None = None,
        paths: tuple[str, ...] | None = None,
        digests: tuple[bytes, ...] | None = None,
        groups: np.ndarray | None = None,
        names: tuple[str, ...] | None = None,
    ):
        if (x is None) == (paths is None):
            raise ValueError("give exactly one of x (in memory) and paths (streamed)")
        self.name = name
        self.labels = tuple(labels)
        self.y = np.asarray(y, dtype=np.int64).reshape(-1)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self._x = x
        self._paths = None if paths is None else tuple(paths)
        self._digests = None if digests is None else tuple(digests)
        self._groups = np.arange(len(self.y)) if groups is None else np.asarray(groups, dtype=np.int64)
        self._names = None if names is None else tuple(names)
        n = len(x) if x is not None else len(self._paths)
        if n != len(self.y) or len(self._groups) != n:
            raise ValueError(f"split {name}: {n} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        kind = "streamed" if self.streamed else "in memory"
        return f"Split({self.name!r}, n={len(self)}, classes={len(self.labels)}, {kind})"

    @property
    def streamed(self) -> bool:
        """True when pixels are decoded from files inside tf.data instead of held in memory."""
        return self._paths is not None

    @property
    def groups(self) -> np.ndarray:
        """Group id per item: byte-identical items share one (ids are comparable across splits of one source)."""
        return self._groups

    @property
    def paths(self) -> tuple[str, ...] | None:
        """The file paths of a streamed split (None in memory)."""
        return self._paths

    @property
    def names(self) -> tuple[str, ...] | None:
        """A name per item when the loader knew one (the file paths of a streamed split), else None."""
        return self._names if self._names is not None else self._paths

    @cached_property
    def fingerprint(self) -> str:
        """sha256 hex over labels, y and pixels (streamed splits: the files' sha256 digests)."""
        h = hashlib.sha256()
        h.update(json.dumps({"labels": self.labels, "size": self.image_size}).encode())
        h.update(self.y.astype("<i8").tobytes())
        if self._x is not None:
            h.update(b"pixels")
            h.update(np.ascontiguousarray(self._x).tobytes())
        else:
            h.update(b"files")
            for digest in self._digests or ():
                h.update(digest)
        return h.hexdigest()

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (x uint8 (N, H, W, 3) RGB 0-255, y int64 (N,)); streamed splits are decoded now."""
        if self._x is not None:
            return self._x, self.y
        return decode_files(self._paths, self.image_size), self.y

    def tf_dataset(self, shuffle: bool = False, seed: int = 0, epoch=None):
        """An unbatched ``tf.data.Dataset`` of (uint8 HxWx3 image, int32 label).

        Args:
            shuffle: reshuffle every epoch; a streamed split shuffles its file list, which is cheap.
            seed: shuffle seed, so runs repeat.
            epoch: an int64 ``tf.Variable`` holding the epoch being trained; each epoch's order is then
                a function of ``(seed, epoch)``, so a resumed run sees the same order as an uninterrupted one.
        """
        from toolkit.data.pipeline import make_tf_dataset

        return make_tf_dataset(self, shuffle=shuffle, seed=seed, epoch=epoch)

    def take(self, n: int, seed: int = 0) -> Split:
        """A stratified subset of ``n`` items (every class keeps at least one when n allows).

        Raises:
            ToolkitError: n is not in 1..len(self).
        """
        if not 1 <= n <= len(self):
            raise ToolkitError(f"cannot take n={n} items from the {self.name} split of {len(self)} items")
        return self.subset(take_indices(self.y, n, seed))

    def relabel(self, labels: tuple[str, ...], mapping: np.ndarray) -> Split:
        """The same items under other class names: item i's label becomes ``mapping[y[i]]``."""
        return Split(self.name, labels, np.asarray(mapping, dtype=np.int64)[self.y], self.image_size, x=self._x,
                     paths=self._paths, digests=self._digests, groups=self._groups)

    def subset(self, index: np.ndarray, name: str | None = None) -> Split:
        """The items at ``index`` (in that order), as a new split."""
        index = np.asarray(index, dtype=np.int64)
        return Split(
            name or self.name,
            self.labels,
            self.y[index],
            self.image_size,
            x=None if self._x is None else self._x[index],
            paths=None if self._paths is None else tuple(self._paths[i] for i in index),
            digests=None if self._digests is None else tuple(self._digests[i] for i in index),
            groups=self._groups[index],
            names=None if self._names is None else tuple(self._names[i] for i in index),
        )


@dataclass(frozen=True)
class Splits:
    """Train, validation and test splits; any of them may be empty."""

    train: Split
    val: Split
    test: Split

    def fingerprints(self) -> dict[str, str]:
        """{"train": hex, "val": hex, "test": hex}, to record in run configs."""
        return {"train": self.train.fingerprint, "val": self.val.fingerprint, "test": self.test.fingerprint}


def stratified_split(
    y: np.ndarray, groups: np.ndarray, fractions: tuple[float, ...], seed: int
) -> list[np.ndarray]:
    """Assign items to parts with the given fractions, per class, keeping each group in one part.

    The first part gets the remainder, so with fractions (val, test) the result is [train, val, test].
    A group's class is the label of its first item (conflicting groups still stay together).

    Returns:
        one sorted index array per part: len(fractions) + 1 arrays.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups.tolist()):
        members.setdefault(g, []).append(i)
    by_class: dict[int, list[int]] = {}
    for g in sorted(members):
        by_class.setdefault(int(y[members[g][0]]), []).append(g)
    for cls in sorted(by_class):
        class_groups = by_class[cls]
        order = rng.permutation(len(class_groups))
        total = sum(len(members[g]) for g in class_groups)
        targets = [int(round(total * f)) for f in fractions]
        # Keep at least one training item per class: a class the model never sees cannot be learned.
        while sum(targets) >= total and total > 0 and any(targets):
            j = max(range(len(targets)), key=lambda k: (targets[k], -k))
            targets[j] -= 1
        filled = [0] * len(fractions)
        for k in order:
            g = class_groups[k]
            size = len(members[g])
            for p, target in enumerate(targets):
                if filled[p] < target:
                    filled[p] += size
                    parts[p + 1].extend(members[g])
                    break
            else:
                parts[0].extend(members[g])
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


def take_indices(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified sample of ``n`` items (largest-remainder quotas per class)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    exact = n * counts / counts.sum()
    quota = np.floor(exact).astype(int)
    floor = 1 if n >= len(classes) else 0  # few-shot: every class must appear when n allows
    quota = np.maximum(quota, floor)
    quota = np.minimum(quota, counts)
    # Hand out what is left by largest remainder, then trim if the minimum of 1 overshot.
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    while quota.sum() < n:
        for j in order:
            if quota.sum() < n and quota[j] < counts[j]:
                quota[j] += 1
    while quota.sum() > n:
        over = np.where(quota > floor, quota - exact, -np.inf)
        quota[int(np.argmax(over))] -= 1
    chosen = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
