"""A head trained on cached features exports as a ``features`` chain: base*.onnx -> head.onnx, validated through
the door's Predictor, run by predict / evaluate / /predict / the door, and refitted by ``toolkit door adapt``."""

import json

import numpy as np
import pytest
from PIL import Image

from toolkit.cli import main
from toolkit.export.validate import choose_threshold
from toolkit.inference.predictor import Predictor
from toolkit.train import features as F
from toolkit.train import runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """(cv run, its export: ONNX float + int8 bases and a float TFLite, the log of the export)."""
    tmp = tmp_path_factory.mktemp("chain")
    mp = pytest.MonkeyPatch()
    mp.setenv(F.CACHE_ENV, str(tmp / "cache"))
    try:
        assert main(["train", "happy", "--data", "synthetic:happy?n=40&seed=2", "--out", str(tmp / "pre"),
                     "--epochs", "1", "--image-size", "32", "--patience", "0"]) == 0
        assert main(["finetune", "happy", "--weights", str(tmp / "pre"), "--data", "synthetic:happy?n=60",
                     "--cache-features", "--head", "cv", "--feature-layer", "flatten", "--cv-folds", "3",
                     "--image-size", "32", "--out", str(tmp / "ft")]) == 0
        assert main(["export", str(tmp / "ft"), "--out", str(tmp / "exp"), "--format", "onnx,tflite", "--quantize",
                     "none,int8", "--max-drop", "100", "--calibration", "16", "--target-far", "0.05"]) == 0
        yield tmp / "ft", tmp / "exp"
    finally:
        mp.undo()


def photos(folder, n=12, seed=5, size=48):
    from toolkit.data.synthetic import draw_face

    rng = np.random.default_rng(seed)
    for label, smile in (("no_smile", False), ("smile", True)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            Image.fromarray(draw_face(rng, smile, (size, size))).save(folder / label / f"snap-{j:02d}.png")
    return folder


def test_the_export_is_a_features_chain_checked_through_the_door_predictor(chain, capsys):
    import onnx

    run, exp = chain
    manifest = json.loads((exp / "manifest.json").read_text())
    assert manifest["pipeline"] == "features" and manifest["serve"] == "head.onnx"
    assert sorted(p.name for p in exp.glob("*.onnx")) == ["base.onnx", "base_int8.onnx", "head.onnx"]
    assert sorted(p.name for p in exp.glob("*.tflite")) == ["model.tflite", "model_int8.tflite"]  # fused, as before
    c = manifest["chain"]
    assert c["base"] == "base_int8.onnx" and set(c["bases"]) == {"base.onnx", "base_int8.onnx"}
    assert c["layer"] == "flatten" and c["sha256"] == manifest["files"]["base_int8.onnx"]["sha256"]
    assert [n.op_type for n in onnx.load(str(exp / "head.onnx")).graph.node] == ["Sub", "Mul", "MatMul", "Add",
                                                                                   "Sigmoid"]
    assert c["head"]["max_abs_dprob"] < 1e-5 and c["head"]["features"] == c["features"]
    float_base = manifest["files"]["base.onnx"]["validation"]
    assert float_base["max_abs_dprob"] < 1e-4 and float_base["agreement"] == 100.0
    oof = np.load(run / "oof.npz")
    expected = choose_threshold(oof["probs"][:, 1], oof["y"], 0.05)["threshold"]
    assert {manifest["files"][f]["threshold"] for f in ("head.onnx", "base.onnx", "base_int8.onnx")} == {expected}

    # the door's Predictor through the float base reproduces the Keras model the run saved
    x, _ = runs.load_run(run).splits().test.numpy()
    from toolkit._keras import predict_array

    want = predict_array(runs.load_run(run).load_model(), x.astype(np.float32), 32).reshape(len(x), -1)
    got = Predictor(exp, "base.onnx").run(x.astype(np.float32))
    assert np.abs(got - want).max() < 1e-4
    assert Predictor(exp).base_file == "base_int8.onnx" and Predictor(exp, "base.onnx").file == "head.onnx"


def test_predict_evaluate_http_and_door_run_the_chain(chain, tmp_path, capsys):
    from runtime_support import LiveServer, http_post

    from toolkit.runtime.core.config import ModelConfig, ServeConfig
    from toolkit.runtime.core.holder import ModelHolder
    from toolkit.runtime.server import create_app

    _, exp = chain
    data = photos(tmp_path / "photos", n=4)
    image = data / "smile" / "snap-00.png"
    assert main(["predict", str(exp), str(image)]) == 0
    assert str(image) in capsys.readouterr().out
    assert main(["evaluate", str(exp), "--data", str(data)]) == 0
    assert "head.onnx's manifest threshold" in capsys.readouterr().out
    class QuietServer(LiveServer):
        # uvicorn's default log config runs logging.config.dictConfig, which closes every handler; TensorFlow's
        # absl handler (from the training above, in this process) then closes the stream pytest captures into
        def uvicorn_config(self, app):
            import uvicorn

            return uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on")

    with QuietServer(create_app(ModelHolder(ModelConfig(exp)), ServeConfig())) as live:
        reply = http_post(f"{live.url}/predict", image.read_bytes(), headers={"content-type": "image/png"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["label"] in ("no_smile", "smile") and 0.0 <= reply.json()["probability"] <= 1.0
    events = tmp_path / "events.jsonl"
    assert main(["door", "run", "--model", str(exp), "--camera", str(data / "smile"), "--max-frames", "3",
                 "--event-log", str(events), "--quiet"]) == 0
    frames = [e for e in map(json.loads, events.read_text().splitlines()) if e["probability"] is not None]
    assert len(frames) == 3 and all(e["decision"] in ("locked", "open") for e in frames)


def test_door_adapt_refits_the_exported_head(chain, tmp_path, capsys):
    from toolkit.inference import versions

    _, exp = chain
    labelled = photos(tmp_path / "labelled", n=12, seed=9)
    state = tmp_path / "state"
    assert main(["door", "adapt", "--model", str(exp), "--data", str(labelled), "--state", str(state),
                 "--force"]) == 0
    out = capsys.readouterr()
    assert "24 labelled photos with features: no_smile 12, smile 12" in out.out + out.err
    assert versions.current(state) == "v1"
    adapted = Predictor(exp, version=versions.version_dir(state, "v1"))
    shipped = Predictor(exp)
    x = np.stack([shipped.load(p) for p in sorted(labelled.rglob("*.png"))]).astype(np.float32)
    feats = shipped.chain.run(x)
    assert not np.allclose(adapted.head(feats), shipped.head(feats), atol=1e-4)  # the head changed, the base not
    assert adapted.version["parent"]["sha256"] == shipped.manifest.files["head.onnx"].sha256
    assert main(["evaluate", str(exp), "--data", str(labelled), "--state", str(state)]) == 0
    assert f"threshold ({adapted.threshold:.4f})" in capsys.readouterr().out  # the version's, not the export's
    assert adapted.threshold != shipped.threshold
