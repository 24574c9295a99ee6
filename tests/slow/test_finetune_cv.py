"""The cross-validated head end to end: finetune --head cv on a tiny happy run, then export's OOF threshold."""

import json

import numpy as np
import pytest

from toolkit.cli import main
from toolkit.config import TrainConfig
from toolkit.export.validate import choose_threshold
from toolkit.train import features as F
from toolkit.train import runs
from toolkit.train.fit import train

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(F.CACHE_ENV, str(tmp_path / "cache"))


def test_cv_head_run_and_export_threshold_from_out_of_fold_scores(tmp_path, capsys):
    pre = train(TrainConfig(model="happy", data="synthetic:happy?n=40&seed=2", out=str(tmp_path / "pre"), epochs=1,
                            image_size=32, patience=0)).path
    ft = tmp_path / "ft"
    assert main(["finetune", "happy", "--weights", str(pre), "--data", "synthetic:happy?n=60", "--cache-features",
                 "--head", "cv", "--feature-layer", "relu0,flatten", "--cv-folds", "3", "--image-size", "32",
                 "--out", str(ft)]) == 0
    out, err = capsys.readouterr()
    assert "info: cross-validated accuracy" in err and "cross-validated accuracy" in out
    cv = json.loads((ft / "metrics.json").read_text())["cv"]
    config = json.loads((ft / "config.json").read_text())
    assert cv["layer"] in ("relu0", "flatten") and cv["folds"] == 3 and cv["n"] == config["sizes"]["train"] + \
        config["sizes"]["val"]
    assert config["head"]["C"] == cv["C"] and len(json.loads((ft / "cv.json").read_text())["grid"]) == 12
    assert json.loads((ft / "cv.json").read_text())["max_abs_dprob_keras"] < 1e-5
    oof = np.load(ft / "oof.npz")
    assert oof["probs"].shape == (cv["n"], 2) and set(oof["fold"]) == {0, 1, 2}
    splits = runs.load_run(ft).splits()  # the folds were grouped by the loader's duplicate groups
    np.testing.assert_array_equal(oof["groups"], np.concatenate([splits.train.groups, splits.val.groups]))

    exp = tmp_path / "exp"
    assert main(["export", str(ft), "--out", str(exp), "--format", "onnx", "--target-far", "0.05"]) == 0
    manifest = json.loads((exp / "manifest.json").read_text())
    source = manifest["data"]["threshold"]
    expected = choose_threshold(oof["probs"][:, 1], oof["y"], 0.05)["threshold"]
    assert source["source"] == "out-of-fold cross-validation scores" and source["n"] == cv["n"]
    # a head on cached features exports as a features chain (base.onnx -> head.onnx) the door can adapt
    assert manifest["pipeline"] == "features" and manifest["serve"] == "head.onnx"
    assert source["threshold"] == expected and manifest["files"]["base.onnx"]["threshold"] == expected
    assert source["far_measured_on"].startswith("test split")
