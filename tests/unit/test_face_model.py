"""The face-landmark smile model: the CV head over feature blocks (synthetic features, fast) and its export
chain run by the door's Predictor (the real MediaPipe files; skipped without them, never the network)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from facemesh_support import real_face_mesh

from toolkit.errors import ToolkitError
from toolkit.train.facemesh import FaceHead, FaceSet, fit_face_head

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "tests" / "fixtures" / "facemesh_parity"


def _sets(n: int = 60, seed: int = 0) -> list[FaceSet]:
    """Clean photos where only the 'landmarks' block carries the label, and two noisier copies of each."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    out = []
    for i, variant in enumerate(("clean", "lowres", "jpeg")):
        marks = rng.normal(0, 1, (n, 6)) + 2.0 * y[:, None] * (1 + 0.5 * i) ** -1
        expr = rng.normal(0, 1, (n, 8))
        found = np.ones(n, bool)
        found[3 + i] = False  # a photo without a face in each set: never a training row
        out.append(FaceSet({"landmarks": marks.astype(np.float32), "expression": expr.astype(np.float32)},
                           found, y, np.arange(n), variant))
    return out


def test_cv_head_chooses_the_informative_block_and_keeps_copies_with_their_photo():
    head = fit_face_head(_sets(), blocks="auto", folds=3)
    assert head.blocks == ("landmarks",)
    assert set(head.candidates) == {"expression", "landmarks", "fused"}
    assert head.candidates["landmarks"]["accuracy_mean"] > head.candidates["expression"]["accuracy_mean"] + 0.2
    scores, ys, what = head.threshold_rows()
    assert "degraded" in what and len(scores) == int(head.oof_degraded.sum()) == 2 * 60 - 2
    # unfolded: the standardiser and the linear layer reproduce the fitted probabilities
    x = _sets()[0].blocks["landmarks"]
    z = (x - head.mean) / np.sqrt(head.var + head.eps)
    assert np.allclose(head.predict(x), 1 / (1 + np.exp(-(z @ head.coef + head.intercept))))


def test_cv_head_refuses_an_unknown_block():
    with pytest.raises(ToolkitError, match="--blocks"):
        fit_face_head(_sets(), blocks="pixels")


@pytest.fixture(scope="module")
def face_export(tmp_path_factory):
    """A landmarks-only export of a made-up head over the parity photo's 7 variants (no training, no fer)."""
    models = real_face_mesh()
    if models is None:
        pytest.skip("no face mesh: set TOOLKIT_MEDIAPIPE_WHEEL to mediapipe 0.10.21's wheel, or convert it once")
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_facemesh_parity import VARIANTS, prepare

    from toolkit.export.facechain import write_face_export
    from toolkit.inference.detect import FaceDetector
    from toolkit.inference.facepipe import FacePipeline
    from toolkit.models.facemesh import FaceMeshModels

    detector, landmark = models
    fm = FaceMeshModels(detector, landmark, landmark.parent / "LICENSE", {}, "mediapipe==0.10.21")
    twins = fm.twins  # the features as the door computes them (LiteRT on the .tflite files when installed)
    pipeline = FacePipeline(FaceDetector(detector, twin=twins.get("detector")), landmark, None, blocks=("landmarks",),
                            twin=twins.get("landmark"))  # fmt: skip
    images = [prepare(PHOTOS, v) for v in VARIANTS] + [np.full((120, 160, 3), 90, np.uint8)]
    y = np.array([1, 0, 1, 0, 1, 0, 1, 1])
    got = [pipeline(im) for im in images]
    found = np.array([g is not None for g in got])
    marks = np.stack([g.blocks["landmarks"] if g else np.zeros(1404, np.float32) for g in got])
    clean = FaceSet({"landmarks": marks}, found, y, np.arange(len(y)), "clean")
    rng = np.random.default_rng(0)
    head = FaceHead(("landmarks",), marks[found].mean(0), marks[found].var(0), 1e-3, rng.normal(0, 0.05, 1404), 0.1,
                    1.0, np.zeros(1), np.zeros(1), np.zeros(1, bool), 3)
    out = tmp_path_factory.mktemp("face") / "happy"
    config = type("C", (), {"name": None, "target_far": 0.05, "overwrite": False})()
    write_face_export(out, head=head, labels=("no_smile", "smile"), models=fm, expression=None,
                      data={"spec": "parity", "kind": "photos", "threshold": {}, "test_figures": {}},
                      threshold={"threshold": 0.5, "far": 0.0, "frr": 0.0, "source": "test"}, clean=clean,
                      test_images=images, y=y, config=config, log=lambda s: None)
    return out, images, head, marks, found


def test_export_chain_runs_in_the_doors_predictor(face_export):
    from toolkit.inference.predictor import Predictor

    out, images, head, marks, found = face_export
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pipeline"] == "facemesh" and manifest["face"]["blocks"] == ["landmarks"]
    assert set(manifest["face"]["files"]) == {"detector", "landmark"}  # no expression file: the head reads none
    assert manifest["face"]["sources"]["landmark"]["licence_name"] == "Apache-2.0"
    assert manifest["face"]["head"]["features"] == 1404
    assert manifest["files"]["head.onnx"]["validation"]["found_mismatch"] == 0
    predictor = Predictor(out)
    p = predictor.predict(images[0])
    assert p.probability == pytest.approx(float(head.predict(marks[:1])[0]), abs=1e-5)
    box = p.details["face"]["box"]
    assert 80 < box[0] < box[2] < 145 and p.details["face"]["presence"] >= 0.5  # the astronaut's face
    none = predictor.predict(images[-1])
    assert none.label == "no_face" and none.decision is False and none.details == {"face": None}


def test_export_refuses_a_changed_landmark_file(face_export, tmp_path):
    import shutil

    from toolkit.inference.predictor import Predictor

    out = tmp_path / "copy"
    shutil.copytree(face_export[0], out)
    landmark = out / json.loads((out / "manifest.json").read_text())["face"]["files"]["landmark"]
    assert landmark.is_file()  # the rewritten face_landmark.relu.onnx on a fresh cache
    with open(landmark, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ToolkitError, match="sha256"):
        Predictor(out)


def test_head_onnx_is_standardiser_then_linear_layer(face_export):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(face_export[0] / "head.onnx")).graph
    assert [n.op_type for n in graph.node] == ["Sub", "Mul", "MatMul", "Add", "Sigmoid"]
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}  # unfolded: a refit rewrites them
    head = face_export[2]
    assert np.allclose(weights["mean"], head.mean, atol=1e-6)
    assert np.allclose(weights["inv_std"], 1 / np.sqrt(head.var + head.eps), rtol=1e-5)
    assert np.allclose(weights["coef"].reshape(-1), head.coef, atol=1e-6)


def test_evaluate_runs_the_chain_on_photos_of_their_own_size(face_export, tmp_path):
    from PIL import Image

    from toolkit.bench.accuracy import evaluate_export

    out, images, _, _, found = face_export
    for i, (image, label) in enumerate(zip(images, ("smile", "no_smile") * 4)):
        (tmp_path / label).mkdir(exist_ok=True)
        Image.fromarray(image).save(tmp_path / label / f"{i}.png")
    report = evaluate_export(str(out), data=str(tmp_path))
    assert report["no_face"] == int((~found).sum()) == 1  # the grey frame: counted wrong, never a guess
    assert report["threshold"] == 0.5 and report["n"] == len(images)
