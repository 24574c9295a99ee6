"""``toolkit finetune hands`` -> ``toolkit export`` -> the door's Predictor.

With a fake tracker (always): no-hand images are counted, named, and wrong in every figure; the export chains
palm, landmark and head in its manifest and validates end to end. With the real models (skipped when the
mediapipe 0.10.21 wheel is not in /tmp/wheels or the weights cache; never downloads): a few sign_digits photos.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolkit.cli import main
from toolkit.inference import handpipe
from toolkit.inference.handfeatures import FEATURE_VERSION
from toolkit.inference.manifest import sha256_file
from toolkit.train import features as F

pytestmark = pytest.mark.slow
WHEEL = Path("/tmp/wheels/mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl")
SIGNS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "sign_digits"
COLOURS = {"0": (200, 40, 40), "5": (40, 200, 40), "9": (40, 40, 200)}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(F.CACHE_ENV, str(tmp_path / "cache"))


def fake_features(tracker, image, min_side=handpipe.MIN_SIDE, zoom_out=handpipe.ZOOM_OUT, spec=None,
                  turns=handpipe.TURNS):  # fmt: skip
    """No hand in a dark image; else spec.dim numbers: the colour channel means plus noise from the pixels."""
    image = np.asarray(image, np.float32)
    if image.mean() < 30:
        return None, None
    x = np.zeros(spec.dim if spec is not None else 63, np.float32)
    x[:3] = image.reshape(-1, 3).mean(0) / 25
    x[3:] = image.reshape(-1)[:len(x) - 3] / 255
    return x, type("Hand", (), {"score": 0.9, "handedness": "left"})()


@pytest.fixture
def fake_models(tmp_path, monkeypatch):
    palm, landmark = tmp_path / "m" / "palm_detection_full.onnx", tmp_path / "m" / "hand_landmark_full.onnx"
    palm.parent.mkdir()
    palm.write_bytes(b"palm"), landmark.write_bytes(b"landmark")
    models = types.SimpleNamespace(palm=palm, landmark=landmark, licence=None, sha256={}, source="fake")

    def copy(folder, m):  # the record copy_hand_models writes: files by role, sha256 by file name
        for f in (m.palm, m.landmark):
            shutil.copy2(f, Path(folder) / f.name)
        return {"files": {"palm": m.palm.name, "landmark": m.landmark.name}, "source": "fake",
                "sha256": {f.name: sha256_file(Path(folder) / f.name) for f in (m.palm, m.landmark)}}

    monkeypatch.setitem(sys.modules, "toolkit.models.hands", types.SimpleNamespace(
        ensure_hand_models=lambda weights=None: models, copy_hand_models=copy))
    import toolkit.train.hands as TH  # first: it binds handpipe's hand_features when imported

    monkeypatch.setattr(handpipe, "open_tracker", lambda *a, **k: object())
    monkeypatch.setattr(handpipe, "hand_features", fake_features)
    monkeypatch.setattr(TH, "hand_features", fake_features)
    return models


def colour_folder(root: Path, n: int = 14, dark: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            base = np.array((8, 8, 8) if i < dark else colour, np.float32)
            img = np.clip(base + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / label / f"img{i:02d}.png")
    return root


def test_fake_tracker_no_hand_accounting_and_chained_export(tmp_path, fake_models, capsys):
    data = colour_folder(tmp_path / "signs")
    run = tmp_path / "run"
    assert main(["finetune", "hands", "--data", str(data), "--head", "cv", "--cv-folds", "3", "--image-size", "32",
                 "--test", "0.3", "--keep-orientation", "--out", str(run)]) == 0  # the real test: upright
    out = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    missing = config["hands"]["no_hand"]
    assert sum(r["no_hand"] for r in missing.values()) == 9  # 3 dark images per class, all counted
    assert all(f.split("/")[1] in ("img00.png", "img01.png", "img02.png") for r in missing.values() for f in r["files"])
    # every dark test image is a wrong answer: accuracy over all test images = found-only accuracy x found share
    n, no_hand = metrics["n"], metrics["no_hand"]
    assert no_hand >= 1 and "no hand found in" in out and metrics["no_hand_files"]
    assert metrics["accuracy"] == pytest.approx(metrics["accuracy_found"] * (n - no_hand) / n)
    assert np.array(metrics["confusion"])[:, -1].sum() == no_hand  # the "no_hand" column
    assert config["head"]["n"] == config["sizes"]["train"] + config["sizes"]["val"] - sum(
        missing[s]["no_hand"] for s in ("train", "val") if s in missing)  # fitted on found images only

    exp = tmp_path / "exported" / "signs"
    assert main(["export", str(run), "--out", str(exp)]) == 0
    manifest = json.loads((exp / "manifest.json").read_text())
    assert manifest["pipeline"] == "hands" and manifest["serve"] == "head.onnx"
    features = manifest["hands"]["features"]  # what the head reads, as the run recorded it
    assert features == config["hands"]["features"] and features["version"] == FEATURE_VERSION
    assert features["orientation"] == "kept" and features["set"] == config["head"]["layer"]
    assert {r["layer"] for r in json.loads((run / "cv.json").read_text())["grid"]} == {"points", "points+angles"}
    assert set(manifest["hands"]["files"].values()) == {"palm_detection_full.onnx", "hand_landmark_full.onnx"}
    assert all((exp / f).is_file() for f in manifest["hands"]["files"].values())
    v = manifest["files"]["head.onnx"]["validation"]
    assert v["agreement"] == 100.0 and v["max_abs_dprob"] < 1e-5 and v["no_hand"] == no_hand
    assert v["accuracy"] == pytest.approx(100 * metrics["accuracy"], abs=5e-4)  # compare() keeps 3 decimals

    assert main(["evaluate", str(exp), "--data", str(data), "--out", str(tmp_path / "ev")]) == 0  # TF-free path
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert ev["n"] == 42 and ev["no_hand"] == 9 and ev["accuracy"] <= 33 / 42
    assert main(["evaluate", str(run)]) == 2 and "a hands run" in capsys.readouterr().err

    from toolkit.inference.predictor import Predictor

    p = Predictor(exp)
    assert p.predict(np.full((64, 64, 3), 5, np.uint8)).label == "no_hand"
    assert p.predict(np.full((64, 64, 3), COLOURS["5"], np.uint8)).label == "5"

    config["hands"]["features"]["version"] = "hands-2"  # a run fitted on the features of before
    (run / "config.json").write_text(json.dumps(config))
    assert main(["export", str(run), "--out", str(tmp_path / "exported" / "old")]) == 2
    assert "the head reads hand features hands-2, this toolkit computes" in capsys.readouterr().err
    assert not (tmp_path / "exported" / "old").exists()


def test_export_with_data_of_a_run_that_held_nothing_out(tmp_path, fake_models, capsys):
    """Issue 23, defect 3: --val 0 --test 0, then 'export RUN --data SPEC' refused for want of --data."""
    data = colour_folder(tmp_path / "signs", n=10, dark=0)
    run, exp = tmp_path / "run", tmp_path / "exp"
    assert main(["finetune", "hands", "--data", str(data), "--head", "cv", "--cv-folds", "3", "--image-size", "32",
                 "--val", "0", "--test", "0", "--out", str(run), "--quiet"]) == 0
    assert main(["export", str(run), "--out", str(exp)]) == 2  # nothing held out and no --data: refused
    assert "pass --data" in capsys.readouterr().err
    assert main(["export", str(run), "--data", str(data), "--out", str(exp)]) == 0, capsys.readouterr().err
    v = json.loads((exp / "manifest.json").read_text())["files"]["head.onnx"]["validation"]
    assert v["n"] == 6 and v["agreement"] == 100.0  # the given data's test split: 15 % of 30 images, 2 per class


def _real_wheel() -> Path | None:
    from toolkit.inference.cache import weights_root

    for path in (WHEEL, weights_root() / WHEEL.name):
        if path.is_file():
            return path
    return None


@pytest.fixture(scope="session")
def hand_cache(tmp_path_factory) -> Path:
    """One cache for the session: the wheel's files are extracted and converted once, not per test."""
    return tmp_path_factory.mktemp("hands-cache")


@pytest.mark.skipif(_real_wheel() is None or not SIGNS.is_dir(), reason="no mediapipe 0.10.21 wheel or sign_digits")
def test_real_models_train_export_and_serve(tmp_path, monkeypatch, hand_cache):
    monkeypatch.setenv(F.CACHE_ENV, str(hand_cache))
    data = tmp_path / "few"
    for label in ("0", "5"):
        (data / label).mkdir(parents=True)
        for f in sorted((SIGNS / label).glob("*.JPG"))[:12]:
            shutil.copy2(f, data / label / f.name)
    run, exp = tmp_path / "run", tmp_path / "exp"
    assert main(["finetune", "hands", "--weights", str(_real_wheel()), "--data", str(data), "--head", "cv",
                 "--cv-folds", "3", "--test", "0.25", "--out", str(run)]) == 0
    assert main(["export", str(run), "--out", str(exp)]) == 0
    manifest = json.loads((exp / "manifest.json").read_text())
    v = manifest["files"]["head.onnx"]["validation"]
    assert v["agreement"] == 100.0 and v["max_abs_dprob"] < 1e-4 and v["accuracy"] >= 75.0
    assert manifest["hands"]["features"]["orientation"] == "upright"  # the default: the hand's angle ignored
    assert manifest["hands"]["turns"] == [30.0, -30.0]  # the run's turned looks, which the door repeats

    from toolkit.inference.predictor import Predictor

    p = Predictor(exp)
    assert p.predict(np.zeros((240, 320, 3), np.uint8) + 128).label == "no_hand"  # a grey wall: an explicit answer
    answer = p.predict(str(sorted((SIGNS / "5").glob("*.JPG"))[-1]))  # not one the head was fitted on
    assert answer.label == "5" and answer.to_dict()["hand"]["handedness"] in ("left", "right")
