"""``load_data(spec)``: one entry point for image folders, course .h5 files and synthetic sets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from toolkit.data.report import DataReport
from toolkit.data.spec import Spec, parse_spec
from toolkit.data.split import Split, Splits, stratified_split, take_indices
from toolkit.errors import ToolkitError

SYNTHETIC_TASKS = ("happy", "signs")


class Dataset:
    """A loaded data source: its labels, what the loader saw, and how to split it.

    Args:
        spec: the spec text it was loaded from.
        pool: the items that :meth:`split` divides into train/val/test.
        report: what the loader saw.
        fixed_test: a test set given by the source (course test_*.h5); it is never re-split.
    """

    def __init__(self, spec: str, pool: Split, report: DataReport, fixed_test: Split | None = None):
        self.spec = spec
        self.report = report
        self._pool = pool
        self._fixed_test = fixed_test

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names; index = integer label."""
        return self._pool.labels

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every image."""
        return self._pool.image_size

    def __len__(self) -> int:
        return len(self._pool) + (len(self._fixed_test) if self._fixed_test is not None else 0)

    def __repr__(self) -> str:
        return f"Dataset({self.spec!r}, n={len(self)}, labels={self.labels})"

    def all(self) -> Split:
        """Every item as one split named "all" (a given test set included), e.g. to inspect or export."""
        if self._fixed_test is None or len(self._fixed_test) == 0:
            return self._pool
        if len(self._pool) == 0:
            return self._fixed_test.subset(np.arange(len(self._fixed_test)), "all")
        parts = (self._pool, self._fixed_test)
        # Only .h5 sources give a test set, and they are always in memory.
        x = np.concatenate([p.numpy()[0] for p in parts])
        y = np.concatenate([p.y for p in parts])
        groups = np.concatenate([self._pool._groups, self._fixed_test._groups + len(self._pool) + 1])
        return Split("all", self.labels, y, self.image_size, x=x, groups=groups)

    def relabel(self, labels: tuple[str, ...], mapping: np.ndarray) -> Dataset:
        """The same items under other class names (see :func:`toolkit.data.labels.align_labels`)."""
        fixed = None if self._fixed_test is None else self._fixed_test.relabel(labels, mapping)
        return Dataset(self.spec, self._pool.relabel(labels, mapping), self.report, fixed)

    def split(self, seed: int = 0, val: float = 0.15, test: float = 0.15) -> Splits:
        """Stratified, deterministic train/val/test splits; byte-identical items stay together.

        Args:
            seed: the same seed always gives the same splits.
            val: share of items for validation (of the training pool when the source gives a test set).
            test: share of items for testing; ignored when the source gives its own test set.

        Raises:
            ToolkitError: a fraction outside [0, 1) or val + test >= 1.
        """
        for name, value in (("val", val), ("test", test)):
            if not 0.0 <= value < 1.0:
                raise ToolkitError(f"split {name}={value}: must be in [0, 1)")
        if val + test >= 1.0:
            raise ToolkitError(
                f"split val={val} + test={test} leaves nothing to train on; keep the sum below 1"
            )
        pool = self._pool
        if self._fixed_test is not None:
            train, val_idx = stratified_split(pool.y, pool._groups, (val,), seed)
            return Splits(pool.subset(train, "train"), pool.subset(val_idx, "val"), self._fixed_test)
        train, val_idx, test_idx = stratified_split(pool.y, pool._groups, (val, test), seed)
        return Splits(pool.subset(train, "train"), pool.subset(val_idx, "val"), pool.subset(test_idx, "test"))


def _size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        size = (int(image_size), int(image_size))
    else:
        try:
            size = tuple(int(v) for v in image_size)
        except (TypeError, ValueError):
            raise ToolkitError(f"image_size={image_size!r}: give an int or (height, width)") from None
    if len(size) != 2 or min(size) < 8 or max(size) > 4096:
        raise ToolkitError(f"image_size={image_size!r}: give an int or (height, width) between 8 and 4096")
    return size


def _synthetic(spec: Spec, size: tuple[int, int]) -> Dataset:
    from toolkit.data.synthetic import TASKS, generate

    if spec.target not in TASKS:
        raise ToolkitError(
            f"data spec {spec.text!r}: unknown synthetic task {spec.target!r}; "
            f"choose one of: {', '.join('synthetic:' + t for t in SYNTHETIC_TASKS)}"
        )
    labels, default_n, _ = TASKS[spec.target]
    n = spec.n or default_n
    if n < len(labels):
        raise ToolkitError(f"data spec {spec.text!r}: n={n} is fewer than the {len(labels)} classes")
    x, y = generate(spec.target, n, spec.seed, size)
    counts = Counter(y.tolist())
    report = DataReport(
        spec=spec.text,
        source="synthetic",
        class_counts={name: counts.get(i, 0) for i, name in enumerate(labels)},
        image_sizes=Counter({(size[1], size[0]): n}),
        image_modes=Counter({"RGB": n}),
    )
    return Dataset(spec.text, Split("all", labels, y, size, x=x), report)


def _subsample(spec: Spec, split: Split) -> Split:
    if spec.n is None:
        return split
    if spec.n > len(split):
        raise ToolkitError(
            f"data spec {spec.text!r}: n={spec.n} but the source holds only {len(split)} items"
        )
    return split.subset(take_indices(split.y, spec.n, spec.seed))


def load_data(
    spec: str,
    image_size: int | tuple[int, int] = 64,
    *,
    strict: bool = False,
    max_in_memory_bytes: int = 2 << 30,
) -> Dataset:
    """Load a data source named by ``spec``.

    Args:
        spec: an image folder (one sub-folder per class), a course ``.h5`` file or a folder of
            ``train_*.h5`` + ``test_*.h5``, or ``synthetic:happy`` / ``synthetic:signs``. Any spec may end
            in ``?n=N&seed=S``: a stratified subsample of N items (synthetic: generate N with seed S;
            with a given test set, N limits the training pool and the test set stays whole). An image
            folder may add ``crop=face``: each photo is cut to its largest face by the door's detector
            before resizing; photos with no face are left out and listed in the report (``no_face``).
        image_size: an int for square images or (height, width); every image is resized to it.
        strict: unreadable image files raise instead of being skipped with a warning.
        max_in_memory_bytes: an image folder whose decoded pixels exceed this streams from disk.

    Returns:
        the :class:`Dataset`; problems it found are logged on ``toolkit.data`` and kept in ``.report``.

    Raises:
        ToolkitError: a missing path, an empty folder, one class only, a class without readable images,
            an .h5 file without the expected keys or with wrong shapes, an unknown synthetic task or a
            bad option; the message is one line naming the file or field.
    """
    size = _size(image_size)
    parsed = parse_spec(spec)
    if parsed.crop and parsed.kind == "synthetic":
        raise ToolkitError(f"data spec {spec!r}: crop=face applies to photo folders, not to synthetic sets")
    if parsed.kind == "synthetic":
        return _synthetic(parsed, size)
    path = Path(parsed.target).expanduser()
    if not path.exists():
        raise ToolkitError(
            f"data path {parsed.target} does not exist; give an image folder, a .h5 file or synthetic:happy"
        )
    from toolkit.data.h5 import H5_SUFFIXES, find_h5_files

    if path.is_file() and path.suffix.lower() in H5_SUFFIXES or path.is_dir() and any(find_h5_files(path)):
        from toolkit.data.h5 import load_h5

        if parsed.crop:
            raise ToolkitError(f"data spec {spec!r}: crop=face applies to photo folders, not to .h5 files")
        pool, fixed_test, report = load_h5(path, parsed.text, size)
        if fixed_test is not None and len(pool) == 0:
            fixed_test = _subsample(parsed, fixed_test)  # test-only file: n limits the test set
        else:
            pool = _subsample(parsed, pool)
        if parsed.n is not None:  # count what was kept, as the folder loader does
            kept = np.concatenate([pool.y] + ([fixed_test.y] if fixed_test is not None else []))
            report.class_counts = {name: int(np.sum(kept == i)) for i, name in enumerate(pool.labels)}
        report.warn()
        return Dataset(parsed.text, pool, report, fixed_test)
    if path.is_file():
        raise ToolkitError(
            f"{path}: not a data source; give a folder with one sub-folder per class, or a .h5 file"
        )
    from toolkit.data.folders import load_folder

    pool, report = load_folder(
        path,
        parsed.text,
        size,
        n=parsed.n,
        seed=parsed.seed,
        strict=strict,
        max_in_memory_bytes=max_in_memory_bytes,
        crop=_face_crop(parsed) if parsed.crop else None,
    )
    report.warn()
    return Dataset(parsed.text, pool, report)


def _face_crop(spec: Spec):
    """The door's face detector (BlazeFace: the cache's converted copy, else the shipped one), as the door crops."""
    from toolkit.inference.detector_files import load_detector

    return load_detector(None)
