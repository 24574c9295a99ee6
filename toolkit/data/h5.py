"""The course's HDF5 files: ``train_*.h5`` (train_set_x, train_set_y, list_classes) and ``test_*.h5``.

A ``test_*.h5`` alone is an evaluation set; with both files the given test set stays the test split and
validation is carved from train. Shapes, dtypes and keys are checked, and every problem names the file
and key, since a silently misread label array trains a model that is confidently wrong.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import numpy as np

from toolkit.data.report import DataReport, find_duplicates
from toolkit.data.split import Split
from toolkit.errors import ToolkitError, printable
from toolkit.images import decode_image

H5_SUFFIXES = (".h5", ".hdf5")


def find_h5_files(folder: Path) -> tuple[Path | None, Path | None]:
    """The (train, test) .h5 files in ``folder``; (None, None) when it holds none.

    Raises:
        ToolkitError: more than one train_*.h5 or test_*.h5 file.
    """
    found: dict[str, list[Path]] = {"train": [], "test": []}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in H5_SUFFIXES:
            for prefix in found:
                if path.name.lower().startswith(prefix + "_"):
                    found[prefix].append(path)
    for prefix, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(printable(p.name) for p in paths)
            raise ToolkitError(f"{printable(folder)}: several {prefix}_*.h5 files ({names}); give one file as the spec")
    return (found["train"] or [None])[0], (found["test"] or [None])[0]


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py ships with the train extra
        raise ToolkitError("reading .h5 files needs h5py: pip install 'door-camera-toolkit[train]'") from None
    return h5py


def _text(value) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", "replace")
    if isinstance(value, (np.integer, int)):
        return str(int(value))
    return str(value)


def read_h5(path: Path, prefix: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    """Read and check ``{prefix}_set_x``, ``{prefix}_set_y`` and the optional ``list_classes``.

    Returns:
        (x uint8 (N, H, W, 3), raw y (N,), class names or None when the file has no list_classes).

    Raises:
        ToolkitError: unreadable file, missing key, wrong shape or dtype; the message names file and key.
    """
    h5py = _h5py()
    x_key, y_key = f"{prefix}_set_x", f"{prefix}_set_y"
    try:
        with h5py.File(path, "r") as f:
            x_ds = _array(f, path, x_key, required=True)
            y_ds = _array(f, path, y_key, required=True)
            if x_ds.ndim == 4 and x_ds.shape[3] == 3 and x_ds.dtype != np.uint8:  # refuse before reading it
                raise ToolkitError(
                    f"{printable(path)}: key {x_key!r} has dtype {x_ds.dtype}; expected uint8 pixels 0-255"
                )
            x = np.asarray(x_ds[()])
            y = np.asarray(y_ds[()])
            c_ds = _array(f, path, "list_classes", required=False)
            classes = None if c_ds is None else np.asarray(c_ds[()]).reshape(-1)
    except ToolkitError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ToolkitError(f"{printable(path)}: not a readable HDF5 file ({_first_line(exc)})") from None
    if x.ndim != 4 or x.shape[3] != 3:
        raise ToolkitError(f"{printable(path)}: key {x_key!r} has shape {x.shape}; expected (N, height, width, 3)")
    if x.dtype != np.uint8:
        raise ToolkitError(f"{printable(path)}: key {x_key!r} has dtype {x.dtype}; expected uint8 pixels 0-255")
    if y.ndim > 1 and sum(d != 1 for d in y.shape) <= 1:
        y = y.reshape(-1)  # the course stores (N,) but its notebooks reshape to (1, N)
    if y.ndim != 1 or len(y) != len(x):
        raise ToolkitError(
            f"{printable(path)}: key {y_key!r} has shape {y.shape}; expected ({len(x)},), one label per image"
        )
    if y.dtype.kind not in "iuSUO":
        raise ToolkitError(f"{printable(path)}: key {y_key!r} has dtype {y.dtype}; expected integer or string labels")
    names = None if classes is None else tuple(_text(c) for c in classes)
    if names is not None and len(set(names)) != len(names):
        raise ToolkitError(f"{printable(path)}: key 'list_classes' repeats a class name: {names}")
    return x, y, names


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _array(f, path: Path, key: str, *, required: bool):
    """The dataset at ``key``, checked before anything is read: an array (not a group or a broken link)
    of a size that fits in memory. None when it is absent and not required.

    Raises:
        ToolkitError: missing, not an array, or larger than half this machine's memory.
    """
    h5py = _h5py()
    try:
        obj = f.get(key)
    except (KeyError, OSError, ValueError, RuntimeError) as exc:  # a link to a missing file or object
        raise ToolkitError(f"{printable(path)}: key {key!r} cannot be opened ({_first_line(exc)})") from None
    if obj is None:
        if not required:
            return None
        keys = ", ".join(sorted(f.keys())) or "none"
        raise ToolkitError(f"{printable(path)}: missing key {key!r} (keys present: {keys}); expected the course format")
    if not isinstance(obj, h5py.Dataset):
        raise ToolkitError(f"{printable(path)}: key {key!r} is a {type(obj).__name__.lower()}, not an array")
    size = int(obj.size or 0) * obj.dtype.itemsize
    if size > _memory_bytes() // 2:
        shape = "x".join(str(d) for d in obj.shape)
        raise ToolkitError(f"{printable(path)}: key {key!r} holds {size / 2**30:,.1f} GiB ({shape} {obj.dtype}), "
                           "more than half this machine's memory; use an image folder (streamed from disk) instead")
    return obj


def encode_labels(path: Path, key: str, y: np.ndarray, names: tuple[str, ...] | None):
    """Map raw labels to indices into ``names`` (derived from y when None); returns (names, y int64)."""
    values = [_text(v) for v in y.tolist()]
    if names is None:
        numeric = all(v.lstrip("-").isdigit() for v in values)
        names = tuple(sorted(set(values), key=int if numeric else str))  # 2 < 10 for digit labels
    lookup = {name: i for i, name in enumerate(names)}
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if v in lookup:
            out[i] = lookup[v]
        elif y.dtype.kind in "iu" and 0 <= int(v) < len(names):
            out[i] = int(v)  # integer labels that index a list of class names
        else:
            raise ToolkitError(f"{printable(path)}: key {key!r} holds label {v!r} not in list_classes {list(names)}")
    return names, out


def load_h5(path: Path, spec: str, size: tuple[int, int]) -> tuple[Split, Split | None, DataReport]:
    """Load a .h5 file or a folder of train_*.h5 + test_*.h5.

    Returns:
        (pool to split into train/val/test, the given test split or None, report).
    """
    if path.is_dir():
        train_path, test_path = find_h5_files(path)
    elif path.name.lower().startswith("test_"):
        train_path, test_path = None, path
    else:
        train_path, test_path = path, None
    parts = {}
    for prefix, file in (("train", train_path), ("test", test_path)):
        if file is not None:
            parts[prefix] = (file, *read_h5(file, prefix))
    names = next((p[3] for p in parts.values() if p[3] is not None), None)
    for file, _, _, file_names in parts.values():
        if names is not None and file_names is not None and file_names != names:
            raise ToolkitError(
                f"{printable(file)}: list_classes {list(file_names)} differ from {list(names)} in the other file"
            )
    if names is None:  # no list_classes anywhere: one shared label set from all y values
        all_y = np.concatenate(
            [p[2].astype(str) if p[2].dtype.kind in "SO" else p[2] for p in parts.values()]
        )
        names = encode_labels(path, "y", all_y, None)[0]
    if len(names) < 2:
        raise ToolkitError(
            f"{printable(path)}: only one class ({names[0] if names else 'none'}); a classifier needs two"
        )

    report = DataReport(spec=spec, source="h5")
    keys, digests, ys, splits = [], [], [], {}
    for prefix, (file, x, y_raw, _) in parts.items():
        names, y = encode_labels(file, f"{prefix}_set_y", y_raw, names)
        report.image_sizes[(x.shape[2], x.shape[1])] += len(x)
        report.image_modes["RGB"] += len(x)
        keys += [f"{file.name}:{prefix}_set_x[{i}]" for i in range(len(x))]
        digests += [hashlib.sha256(img.tobytes()).digest() for img in x]
        ys += y.tolist()
        if x.shape[1:3] != size:
            x = (
                np.stack([decode_image(img, size) for img in x])
                if len(x)
                else np.zeros((0, *size, 3), np.uint8)
            )
        splits[prefix] = (x, y)
    report.duplicates, report.conflicts, groups = find_duplicates(keys, digests, ys)
    counts = Counter(ys)
    report.class_counts = {name: counts.get(i, 0) for i, name in enumerate(names)}

    n_train = len(splits["train"][1]) if "train" in splits else 0
    x, y = splits.get("train", (np.zeros((0, *size, 3), np.uint8), np.zeros(0, np.int64)))
    pool = Split("all", names, y, size, x=x, groups=np.array(groups[:n_train], dtype=np.int64))
    test = None
    if "test" in splits:
        tx, ty = splits["test"]
        test = Split("test", names, ty, size, x=tx, groups=np.array(groups[n_train:], dtype=np.int64))
    return pool, test, report
