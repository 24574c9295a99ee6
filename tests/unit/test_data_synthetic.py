"""Synthetic sets: deterministic per seed, different across seeds, balanced, the contract's labels."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.data import SYNTHETIC_TASKS, load_data
from toolkit.errors import ToolkitError


@pytest.mark.parametrize("task", SYNTHETIC_TASKS)
def test_synthetic_is_deterministic_per_seed(task):
    a = load_data(f"synthetic:{task}?n=12&seed=5", 32).split(val=0, test=0).train
    b = load_data(f"synthetic:{task}?n=12&seed=5", 32).split(val=0, test=0).train
    c = load_data(f"synthetic:{task}?n=12&seed=6", 32).split(val=0, test=0).train
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
    xa, _ = a.numpy()
    xc, _ = c.numpy()
    assert np.abs(xa.astype(int) - xc.astype(int)).mean() > 10  # really different pictures
    assert xa.shape == (12, 32, 32, 3) and xa.dtype == np.uint8
    assert len({img.tobytes() for img in xa}) == 12  # no two images alike


def test_labels_and_balance():
    happy = load_data("synthetic:happy?n=10")
    assert happy.labels == ("no_smile", "smile")  # smile = 1, the class that opens the door
    assert happy.report.class_counts == {"no_smile": 5, "smile": 5}
    signs = load_data("synthetic:signs?n=12", (48, 40))
    assert signs.labels == ("0", "1", "2", "3", "4", "5")
    assert signs.image_size == (48, 40)
    assert signs.split(val=0, test=0).train.numpy()[0].shape == (12, 48, 40, 3)


def test_smiles_differ_from_no_smiles_at_the_mouth():
    x, y = load_data("synthetic:happy?n=200&seed=1").split(val=0, test=0).train.numpy()
    mouth = x[:, 40:56, 20:44].astype(float).mean(axis=(0, 3))
    smile = x[y == 1, 40:56, 20:44].astype(float).mean(axis=(0, 3))
    assert np.abs(smile - mouth).max() > 3  # the mouth region carries the label


@pytest.mark.parametrize(
    "spec, message",
    [
        ("synthetic:faces", "unknown synthetic task 'faces'"),
        ("synthetic:signs?n=3", "fewer than the 6 classes"),
    ],
)
def test_synthetic_errors(spec, message):
    with pytest.raises(ToolkitError, match=message):
        load_data(spec)
