"""Data labels against model labels: equal names, integer classes matched by index, one-line refusals.

Evaluation, export validation (both through ``Run.splits`` / ``eval_split``) and the benchmark share
:func:`toolkit.data.labels.align_labels`; these tests pin its rules and the places that call it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolkit.data import load_data
from toolkit.data.labels import align_labels, match_labels
from toolkit.errors import ToolkitError

MODEL = ("no_smile", "smile")


@pytest.fixture
def data_log(log_lines):
    return log_lines("toolkit.data")


def test_equal_names_need_no_mapping():
    assert match_labels(("no_smile", "smile"), MODEL, "x") is None


def test_integer_names_map_by_their_value_whatever_their_order():
    assert match_labels(("0", "1"), MODEL, "x").tolist() == [0, 1]
    # an image folder sorts class folders as text: 10 before 2
    names = tuple(sorted(str(i) for i in range(12)))
    mapping = match_labels(names, tuple(f"c{i}" for i in range(12)), "x")
    assert [names[i] for i in range(12)] == [str(v) for v in mapping]


@pytest.mark.parametrize(
    "data",
    [("happy", "sad"), ("0", "1", "2"), ("1", "2"), ("smile", "no_smile")],
)
def test_other_names_are_one_line_naming_both_lists(data):
    with pytest.raises(ToolkitError) as exc:
        match_labels(data, MODEL, "faces.h5")
    message = str(exc.value)
    assert "\n" not in message and message.startswith("faces.h5: ")
    assert ", ".join(data) in message and "no_smile, smile" in message


def test_align_relabels_every_part_and_says_so_once(data_log):
    ds = load_data("synthetic:signs?n=24", 32)  # labels "0".."5"
    model = tuple(f"sign{i}" for i in range(6))
    aligned = align_labels(ds, model)
    assert aligned.labels == model
    assert np.array_equal(aligned.all().y, ds.all().y)  # "3" is the model's index 3
    assert data_log == ["data labels 0, 1, 2, 3, 4, 5 matched to model labels " + ", ".join(model) + " by index"]
    assert align_labels(aligned, model) is aligned and len(data_log) == 1


def _course_h5(path: Path, y: np.ndarray) -> Path:
    h5py = pytest.importorskip("h5py")
    x = load_data("synthetic:happy?n=20", 64).all().numpy()[0]
    with h5py.File(path, "w") as f:
        f["test_set_x"] = x[: len(y)]
        f["test_set_y"] = y
        f["list_classes"] = np.array([0, 1])
    return path


def test_run_splits_and_eval_split_score_a_course_h5_by_index(tmp_path, data_log):
    from toolkit.train.evaluate import eval_split
    from toolkit.train.runs import Run

    y = np.array([0, 1] * 10)
    h5 = _course_h5(tmp_path / "test_happy.h5", y)
    run = Run(tmp_path, {"labels": list(MODEL), "image_size": [64, 64],
                         "train": {"data": "synthetic:happy", "seed": 0, "val": 0.15, "test": 0.15}})
    test = run.splits(str(h5)).test  # what `toolkit export RUN --data` validates on
    assert test.labels == MODEL and test.y.tolist() == y.tolist()
    split = eval_split(str(h5), (64, 64), labels=MODEL)  # `toolkit evaluate MODEL --data`
    assert split.labels == MODEL and len(split) == 20
    assert data_log == ["data labels 0, 1 matched to model labels no_smile, smile by index"] * 2
    with pytest.raises(ToolkitError, match=r"data labels 0, 1, 2, 3, 4, 5 do not match the model's no_smile, smile"):
        run.splits("synthetic:signs?n=12")
