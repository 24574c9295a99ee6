"""Splits: deterministic per seed, stratified, fingerprints stable and sensitive; take(); spec options."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.data import Split, load_data
from toolkit.data.spec import parse_spec
from toolkit.data.split import stratified_split, take_indices
from toolkit.errors import ToolkitError


def _split(n=100, classes=(70, 30), seed=0) -> Split:
    y = np.concatenate([np.full(c, i) for i, c in enumerate(classes)])
    x = np.random.default_rng(seed).integers(0, 256, (len(y), 8, 8, 3), dtype=np.uint8)
    return Split("all", tuple(str(i) for i in range(len(classes))), y, (8, 8), x=x)


def test_stratified_split_is_deterministic_and_stratified():
    y = np.array([0] * 70 + [1] * 30)
    groups = np.arange(100)
    a = stratified_split(y, groups, (0.15, 0.15), seed=3)
    b = stratified_split(y, groups, (0.15, 0.15), seed=3)
    c = stratified_split(y, groups, (0.15, 0.15), seed=4)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))
    assert sorted(np.concatenate(a).tolist()) == list(range(100))  # a partition
    train, val, test = a
    assert np.bincount(y[val]).tolist() == [10, 4] and np.bincount(y[test]).tolist() == [10, 4]


def test_tiny_classes_keep_a_training_item():
    y = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    train, val, test = stratified_split(y, np.arange(10), (0.4, 0.4), seed=0)
    assert 0 in y[train] and 1 in y[train]


def test_fingerprints_are_stable_and_sensitive_to_one_pixel():
    split = _split()
    assert split.fingerprint == _split().fingerprint
    assert len(split.fingerprint) == 64
    x, y = split.numpy()
    x2 = x.copy()
    x2[17, 3, 4, 1] ^= 1
    assert Split("all", split.labels, y, (8, 8), x=x2).fingerprint != split.fingerprint
    y2 = y.copy()
    y2[0] = 1
    assert Split("all", split.labels, y2, (8, 8), x=x).fingerprint != split.fingerprint
    assert Split("all", ("a", "b"), y, (8, 8), x=x).fingerprint != split.fingerprint


def test_dataset_splits_repeat_per_seed():
    ds = load_data("synthetic:signs?n=60&seed=4", 32)
    assert ds.split(seed=1).fingerprints() == ds.split(seed=1).fingerprints()
    assert ds.split(seed=1).fingerprints()["train"] != ds.split(seed=2).fingerprints()["train"]
    splits = ds.split(seed=1, val=0.2, test=0.2)
    for part in (splits.val, splits.test):
        assert np.bincount(part.y, minlength=6).tolist() == [2] * 6
    assert splits.train.name == "train" and splits.train.image_size == (32, 32)


def test_take_is_stratified_and_covers_every_class():
    split = _split(classes=(70, 20, 10))
    sub = split.take(10, seed=1)
    assert len(sub) == 10 and np.bincount(sub.y).tolist() == [7, 2, 1]
    assert np.array_equal(sub.y, split.take(10, seed=1).y)
    assert set(split.take(3).y.tolist()) == {0, 1, 2}
    y = np.array([0] * 5 + [1] * 95)
    assert np.bincount(y[take_indices(y, 4, 0)]).tolist() == [1, 3]
    with pytest.raises(ToolkitError, match="cannot take n=101"):
        split.take(101)


def test_split_fraction_errors():
    ds = load_data("synthetic:happy?n=20")
    with pytest.raises(ToolkitError, match="leaves nothing to train on"):
        ds.split(val=0.5, test=0.5)
    with pytest.raises(ToolkitError, match="must be in"):
        ds.split(val=-0.1)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("synthetic:happy?n=abc", "must be an integer"),
        ("synthetic:happy?size=3", "unknown option 'size'"),
        ("synthetic:happy?n=0", "positive integer"),
        ("synthetic:happy?n=1&n=2", "given twice"),
        ("synthetic:happy?n", "cannot parse options"),
        ("", "empty"),
    ],
)
def test_bad_spec_options(spec, message):
    with pytest.raises(ToolkitError, match=message):
        parse_spec(spec)


def test_spec_parsing():
    spec = parse_spec("data/faces?n=20&seed=3")
    assert (spec.kind, spec.target, spec.n, spec.seed) == ("path", "data/faces", 20, 3)
    assert parse_spec("synthetic:signs").target == "signs"
