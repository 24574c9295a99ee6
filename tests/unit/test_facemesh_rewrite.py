"""The face landmark model is rewritten once for speed (PRelu -> Relu + slope * Min) beside its conversion, with
the same outputs; exports carry the rewritten file. Uses a copy of the real cached files (skipped without them)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from toolkit.inference.cache import weights_root


def test_the_cached_landmark_model_is_rewritten_once_with_the_same_outputs(tmp_path, monkeypatch):
    import onnx
    import onnxruntime as ort

    source = weights_root() / "mediapipe-0.10.21"
    files = ["face_landmark.tflite", "face_landmark.onnx", "facemesh.json"]
    if not all((source / f).is_file() for f in files) or not (weights_root() / "blazeface").is_dir():
        pytest.skip("no converted face mesh in the weights cache")
    target = tmp_path / "weights" / "mediapipe-0.10.21"
    target.mkdir(parents=True)
    for f in files:
        shutil.copy2(source / f, target / f)
    record = json.loads((target / "facemesh.json").read_text())
    record.pop("rewrite", None)  # as a cache from before the rewrite
    (target / "facemesh.json").write_text(json.dumps(record))
    shutil.copytree(weights_root() / "blazeface", tmp_path / "weights" / "blazeface")
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path))
    from toolkit.models.facemesh import ensure_face_mesh

    models = ensure_face_mesh()
    assert models.landmark == target / "face_landmark.relu.onnx"
    ops = [n.op_type for n in onnx.load(str(models.landmark)).graph.node]
    assert "PRelu" not in ops and ops.count("Min") == 23
    saved = json.loads((target / "facemesh.json").read_text())
    assert saved["rewrite"]["key"] == "prelu-relu-min-1" and models.landmark.name in models.sha256
    from toolkit.models.facemesh import copy_face_mesh

    (tmp_path / "export").mkdir()
    record = copy_face_mesh(tmp_path / "export", models)  # what an export's manifest says of the file
    assert record["files"]["landmark"] == "face_landmark.relu.onnx" and "PRelu rewritten" in record["source"]
    stamp = models.landmark.stat().st_mtime_ns
    assert ensure_face_mesh().landmark.stat().st_mtime_ns == stamp  # cached: not rewritten again
    x = np.random.default_rng(1).random((1, 192, 192, 3), dtype=np.float32)
    before, after = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                     for p in (target / "face_landmark.onnx", models.landmark))  # fmt: skip
    name = before.get_inputs()[0].name
    for a, b in zip(before.run(None, {name: x}), after.run(None, {name: x}), strict=True):
        assert np.array_equal(a, b)
