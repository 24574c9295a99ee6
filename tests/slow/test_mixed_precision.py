"""Automatic mixed precision end to end on a tiny CNN: a forced miss keeps layers float, --explain, failure line."""

import json
import re

import numpy as np
import pytest

from toolkit.cli import main
from toolkit.errors import ToolkitError
from toolkit.export import ExportConfig, export
from toolkit.export import api as export_api
from toolkit.export.mixed import macs
from toolkit.inference.manifest import load_manifest

pytestmark = pytest.mark.slow
DATA = "synthetic:signs?n=60&seed=1"  # 6 classes; the bare-file split leaves 9 val and 9 test images
CONVS = ("conv_a", "conv_b", "dense_out")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from toolkit._keras import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.Input((16, 16, 3), name="image")
    x = k.layers.Rescaling(1 / 255.0, name="preprocess")(inputs)
    x = k.layers.Conv2D(4, 3, padding="same", name="conv_a")(x)
    x = k.layers.BatchNormalization(name="bn_a")(x)
    x = k.layers.ReLU(name="relu_a")(x)
    x = k.layers.Conv2D(8, 3, strides=2, name="conv_b", activation="relu")(x)
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = k.layers.Dense(6, activation="softmax", name="dense_out")(x)
    model = k.Model(inputs, outputs, name="tiny_cnn")
    dense = model.get_layer("dense_out")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 30, bias])  # confident answers: int8 noise then flips few of them
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    assert macs(model) == {"conv_a": 16 * 16 * 9 * 3 * 4, "conv_b": 7 * 7 * 9 * 4 * 8, "dense_out": 8 * 6}
    return path


def _config(model_file, out, **kw):
    return ExportConfig(source=str(model_file), data=DATA, out=str(out), formats=("onnx",), quantize=("int8",),
                        calibration=16, **kw)


def _worse_first(monkeypatch, points: float, times: int):
    """Make the first ``times`` validations of the held-out split lose ``points`` (the files stay real)."""
    real, calls = export_api.compare, []

    def compare(probs, reference, y):
        calls.append(1)
        m = real(probs, reference, y)
        return {**m, "accuracy": m["float_accuracy"] - points} if len(calls) <= times else m

    monkeypatch.setattr(export_api, "compare", compare)


def test_a_miss_keeps_the_worst_layers_float_and_the_manifest_says_so(model_file, tmp_path, monkeypatch):
    _worse_first(monkeypatch, 60.0, times=1)  # the plain int8 file misses; the rebuilt one is judged as it is
    logs = []
    out = export(_config(model_file, tmp_path / "mixed", max_drop=50.0), log=logs.append)
    entry = load_manifest(out).files["model_int8.onnx"]
    record = entry.mixed_precision
    ranking = [r["layer"] for r in record["ranking"]]
    assert sorted(ranking) == sorted(CONVS) and record["selection_split"] == "val"
    errors = [r["error"] for r in record["ranking"]]
    assert errors == sorted(errors, reverse=True)
    # any float layer changes at most a third of 9 val images < 50 %: the search stops at one layer
    assert record["float_layers"] == ranking[:1] and [t["float_layers"] for t in record["tried"]] == [1]
    assert all(0 <= t["changed_percent"] <= 50.0 for t in record["tried"])
    assert record["plain_int8"]["drop"] == 60.0 and record["drop"] == entry.validation["drop"] <= 50.0
    lo, hi = record["drop_95"]
    assert lo <= record["drop"] <= hi
    assert set(record["p50_ms_1thread"]) == {"int8", "mixed"} and record["bytes"]["mixed"] > 0
    assert any("mixed precision kept 1 of 3 layers float" in line for line in logs)
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["data"]["selection_split"] == "val" and len(raw["data"]["calibration"]["fingerprint"]) == 64


def test_a_miss_that_mixed_precision_cannot_fix_is_one_line_and_writes_nothing(model_file, tmp_path, monkeypatch):
    _worse_first(monkeypatch, 60.0, times=99)
    out = tmp_path / "fails"
    with pytest.raises(ToolkitError) as info:
        export(_config(model_file, out, max_drop=50.0), log=lambda m: None)
    msg = str(info.value)
    assert "\n" not in msg and "drop 60.0 points, 95% interval" in msg and "> --max-drop 50" in msg
    assert "automatic mixed precision did not help: with 1 of 3 layers in float" in msg
    assert "plain int8 lost 60.0" in msg and not out.exists()
    _worse_first(monkeypatch, 60.0, times=99)
    with pytest.raises(ToolkitError, match="try --quantize qat") as info:  # off: the plain gate, nothing tried
        export(_config(model_file, out, max_drop=50.0, mixed_precision="off"), log=lambda m: None)
    assert "mixed precision" not in str(info.value)


def test_explain_prints_the_worst_layers_with_their_mac_share(model_file, tmp_path, capsys):
    code = main(["export", str(model_file), "--data", DATA, "--out", str(tmp_path / "x"), "--format", "onnx",
                 "--quantize", "none,int8", "--calibration", "16", "--max-drop", "100", "--explain"])
    err = capsys.readouterr().err
    assert code == 0 and "model_int8.onnx: layers int8 hurts most" in err
    rows = [line for line in err.splitlines() if re.match(r"\s+\d+\. \S+ +error ", line)]
    assert sorted(row.split()[1] for row in rows) == sorted(CONVS)
    shares = {row.split()[1]: float(row.split()[-1].rstrip("%")) for row in rows}
    assert shares["conv_b"] > shares["dense_out"] and abs(sum(shares.values()) - 100) < 0.5
    entry = load_manifest(tmp_path / "x").files["model_int8.onnx"]
    assert entry.mixed_precision["float_layers"] == [] and len(entry.mixed_precision["ranking"]) == 3
    assert load_manifest(tmp_path / "x").files["model.onnx"].mixed_precision is None
    assert np.isfinite(entry.validation["drop_95"]).all()
