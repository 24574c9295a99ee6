"""Mixed precision's format-independent parts: ranking, bisection, the paired interval, manifest fields."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from toolkit.export.mixed import LayerScore, explain_lines, paired_drop, rank, report, search
from toolkit.inference.manifest import load_manifest

COMMITTED = Path(__file__).resolve().parents[2] / "exported" / "happy"


def test_ranking_is_worst_first_keyed_by_layer_name_with_mac_shares():
    errors = {"conv1": 0.02, "fc": 0.30, "conv2": 0.02, "conv3": 0.0}
    ranking = rank(errors, {"conv1": 100, "conv2": 300, "conv3": 500, "fc": 100})
    assert [s.layer for s in ranking] == ["fc", "conv2", "conv1", "conv3"]  # ties: more MACs first
    assert [s.error for s in ranking] == sorted(errors.values(), reverse=True)
    assert math.isclose(sum(s.mac_share for s in ranking), 1.0) and ranking[0].mac_share == pytest.approx(0.1)
    kept = report(ranking * 10, "val")["ranking"]
    assert len(kept) == 20 and kept[0] == {"layer": "fc", "error": 0.30, "mac_share": pytest.approx(0.1)}
    lines = explain_lines("model_int8.onnx", ranking * 5)
    assert len(lines) == 11 and "fc" in lines[1] and "30.0%" not in lines[1] and "10.0%" in lines[1]


@pytest.mark.parametrize("n", [1, 2, 7, 54, 200])
@pytest.mark.parametrize("needed_fraction", [0.0, 0.3, 1.0])
def test_bisection_builds_log_n_files_and_returns_the_smallest_passing_k(n, needed_fraction):
    ranking = [LayerScore(f"l{i}", 1.0 - i / n, 1 / n) for i in range(n)]
    needed = max(1, math.ceil(needed_fraction * n))
    calls = []

    def build(layers):
        calls.append(layers)
        assert layers == tuple(s.layer for s in ranking[: len(layers)])  # always a prefix of the ranking
        return len(layers)

    result = search(ranking, build, lambda k: k >= needed, low=1)
    assert result.k == needed and result.runner == needed
    assert len(calls) <= 2 * math.ceil(math.log2(n)) + 1 and len(set(calls)) == len(calls)
    if needed == 1:  # the usual case: the worst layer alone; one build
        assert len(calls) == 1
    assert all(ok == (k >= needed) for k, ok in result.tried)


def test_bisection_reports_failure_when_even_every_layer_in_float_fails():
    ranking = [LayerScore(f"l{i}", 0.1, 0.1) for i in range(10)]
    result = search(ranking, lambda layers: len(layers), lambda k: False, low=1)
    assert result.k is None and [k for k, _ in result.tried] == [1, 2, 4, 8, 10]


def test_paired_drop_interval_holds_the_point_estimate_and_narrows_with_agreement():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(5, 300))
        y = rng.integers(0, 3, n)
        f = np.where(rng.random(n) < 0.9, y, (y + 1) % 3)
        q = np.where(rng.random(n) < rng.uniform(0.8, 1.0), f, rng.integers(0, 3, n))
        d = paired_drop(f, q, y)
        lo, hi = d["drop_95"]
        assert lo <= d["drop"] <= hi and -100 <= lo and hi <= 100
        assert d["drop"] == pytest.approx(100 * (np.mean(f == y) - np.mean(q == y)), abs=1e-3)
    y = np.zeros(186, dtype=int)
    f = y.copy()
    f[:6] = 1  # float wrong on 6 images
    same = paired_drop(f, f, y)
    two_broken = f.copy()
    two_broken[6:8] = 1
    worse = paired_drop(f, two_broken, y)
    assert same["drop"] == 0 and same["drop_95"][0] < 0 < same["drop_95"][1]  # no discordant pair: still a width
    assert worse["drop"] == pytest.approx(1.075, abs=1e-3) and worse["broken"] == 2 and worse["fixed"] == 0
    assert worse["drop_95"][1] - worse["drop_95"][0] > same["drop_95"][1] - same["drop_95"][0]


def test_manifest_reader_takes_files_with_and_without_the_mixed_precision_record(tmp_path):
    folder = tmp_path / "happy"
    shutil.copytree(COMMITTED, folder)
    assert all(e.mixed_precision is None for e in load_manifest(folder).files.values())  # a /2 manifest as it was
    raw = json.loads((folder / "manifest.json").read_text())
    record = {"float_layers": ["conv0"], "ranking": [{"layer": "conv0", "error": 0.01, "mac_share": 0.99}],
              "selection_split": "val", "drop": 0.0, "drop_95": [-1.2, 1.2]}
    raw["files"]["model_int8.onnx"]["mixed_precision"] = record
    (folder / "manifest.json").write_text(json.dumps(raw))
    assert load_manifest(folder).files["model_int8.onnx"].mixed_precision == record
    raw["schema"] = "toolkit.manifest/1"
    (folder / "manifest.json").write_text(json.dumps(raw))
    assert load_manifest(folder).files["model_int8.onnx"].mixed_precision["float_layers"] == ["conv0"]


def test_without_a_val_split_layers_are_chosen_on_a_held_back_part_of_train_calibration_never_sees():
    from types import SimpleNamespace

    from toolkit.data.split import Split, Splits
    from toolkit.export.automix import selection_split

    y = np.repeat([0, 1, 2], 20)
    x = np.arange(60, dtype=np.uint8).reshape(60, 1, 1, 1) * np.ones((1, 4, 4, 3), dtype=np.uint8)
    train = Split("train", ("a", "b", "c"), y, (4, 4), x=x)
    empty = Split("val", ("a", "b", "c"), y[:0], (4, 4), x=x[:0])
    test = Split("test", ("a", "b", "c"), y[:6], (4, 4), x=x[:6])
    int8 = [SimpleNamespace(quantization="int8")]
    config = SimpleNamespace(mixed_precision="auto", explain=False, seed=0)
    pool, selection = selection_split(None, Splits(train, empty, test), test, int8, config)
    assert selection.name == "train-held-back" and len(pool) == 48 and len(selection.split) == 12
    assert not set(pool.numpy()[0][:, 0, 0, 0]) & set(selection.split.numpy()[0][:, 0, 0, 0])
    assert np.bincount(selection.split.y).tolist() == [4, 4, 4]
    assert selection_split(None, Splits(train, empty, test), test, int8,
                           SimpleNamespace(mixed_precision="off", explain=False, seed=0)) == (train, None)
