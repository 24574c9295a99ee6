"""Course .h5 loader: key, shape and dtype checks, byte-string labels, test-only files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolkit.data import load_data
from toolkit.errors import ToolkitError

h5py = pytest.importorskip("h5py")


def write_h5(path: Path, prefix: str, n: int, *, seed: int = 0, classes=(0, 1), y=None, x=None, **extra):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8) if x is None else x
    y = (np.arange(n) % len(classes)).astype(np.int64) if y is None else y
    with h5py.File(path, "w") as f:
        f[f"{prefix}_set_x"] = x
        f[f"{prefix}_set_y"] = y
        if classes is not None:
            f["list_classes"] = np.array(classes)
        for key, value in extra.items():
            f[key] = value
    return path


def test_train_file_with_byte_string_labels(tmp_path):
    y = np.array([b"cat", b"dog"] * 10)
    path = write_h5(tmp_path / "train_pets.h5", "train", 20, y=y, classes=[b"cat", b"dog"])
    ds = load_data(str(path), 32)
    assert ds.labels == ("cat", "dog")
    splits = ds.split(seed=0, val=0.2, test=0.2)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 4, 4)
    x, y = splits.train.numpy()
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.uint8  # resized from 64
    assert np.bincount(y).tolist() == [6, 6]


def test_folder_with_train_and_test_keeps_the_given_test_set(tmp_path):
    write_h5(tmp_path / "train_happy.h5", "train", 40, seed=1)
    write_h5(tmp_path / "test_happy.h5", "test", 10, seed=2)
    ds = load_data(str(tmp_path), 64)
    assert ds.labels == ("0", "1")  # integer list_classes become strings
    splits = ds.split(seed=0, val=0.25)
    assert len(splits.test) == 10 and len(splits.train) + len(splits.val) == 40 and len(splits.val) == 10
    with h5py.File(tmp_path / "test_happy.h5") as f:
        np.testing.assert_array_equal(splits.test.numpy()[0], f["test_set_x"][()])
    assert ds.report.class_counts == {"0": 25, "1": 25}


def test_test_file_alone_is_an_evaluation_set(tmp_path):
    path = write_h5(tmp_path / "test_signs.h5", "test", 12, classes=list(range(6)))
    splits = load_data(str(path)).split()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (0, 0, 12)
    assert splits.train.numpy()[0].shape == (0, 64, 64, 3)
    assert splits.test.labels == ("0", "1", "2", "3", "4", "5")


def test_duplicate_images_in_h5_are_reported(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
    x[5] = x[0]
    path = write_h5(tmp_path / "train_x.h5", "train", 10, x=x)
    report = load_data(str(path)).report
    assert report.duplicates == [("train_x.h5:train_set_x[0]", "train_x.h5:train_set_x[5]")]
    assert report.conflicts == [report.duplicates[0]]  # labels 0 and 1 alternate


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prefix": "train", "drop": "train_set_y"}, "missing key 'train_set_y'"),
        ({"prefix": "train", "x": np.zeros((4, 64, 64, 3), np.float32)}, "dtype float32; expected uint8"),
        ({"prefix": "train", "x": np.zeros((4, 64, 64), np.uint8)}, r"shape \(4, 64, 64\)"),
        ({"prefix": "train", "y": np.zeros(3, np.int64)}, r"expected \(4,\)"),
        ({"prefix": "train", "y": np.array([0, 1, 2, 0])}, "label '2' not in list_classes"),
        ({"prefix": "test", "name": "test_a.h5", "drop": "test_set_x"}, "missing key 'test_set_x'"),
    ],
)
def test_h5_errors_name_file_and_key(tmp_path, kwargs, message):
    prefix = kwargs["prefix"]
    path = tmp_path / kwargs.get("name", "train_a.h5")
    x = kwargs.get("x", np.zeros((4, 64, 64, 3), np.uint8))
    y = kwargs.get("y", np.array([0, 1, 0, 1]))
    with h5py.File(path, "w") as f:
        for key, value in (
            (f"{prefix}_set_x", x),
            (f"{prefix}_set_y", y),
            ("list_classes", np.array([0, 1])),
        ):
            if key != kwargs.get("drop"):
                f[key] = value
    with pytest.raises(ToolkitError, match=message) as info:
        load_data(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "train_bad.h5"
    path.write_bytes(b"this is not hdf5")
    with pytest.raises(ToolkitError, match="not a readable HDF5 file"):
        load_data(str(path))
