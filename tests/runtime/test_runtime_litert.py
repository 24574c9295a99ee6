"""LiteRT for MediaPipe's models (toolkit.inference.litert): the choice, the session, the export's twins.

The real ``.tflite`` files come from the weights cache beside their ONNX conversions (hands_support,
facemesh_support); tests that need them or ai-edge-litert skip without them, never the network.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from hands_support import real_hand_models

from toolkit.errors import ToolkitError
from toolkit.inference import litert
from toolkit.inference.litert import RUNTIME_ENV, LiteSession, choose, export_twins, open_model


@pytest.fixture
def palm_pair():
    """(palm ONNX, palm .tflite) of the real hand models, or skip."""
    models = real_hand_models()
    twin = models[0].parent / "palm_detection_full.tflite" if models else None
    if twin is None or not twin.is_file() or not litert.litert_available():
        pytest.skip("needs the real palm model and its .tflite, and ai-edge-litert")
    return models[0], twin


def test_the_setting_picks_the_runtime(tmp_path, monkeypatch):
    twin = tmp_path / "m.tflite"
    twin.write_bytes(b"x")
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    monkeypatch.setattr(litert, "litert_available", lambda: True)
    assert choose(twin, "m") == "litert"  # auto: the twin when there is one
    assert choose(None, "m") == choose(tmp_path / "missing.tflite", "m") == "onnxruntime"
    monkeypatch.setenv(RUNTIME_ENV, "onnxruntime")
    assert choose(twin, "m") == "onnxruntime"
    monkeypatch.setenv(RUNTIME_ENV, "LiteRT")
    assert choose(twin, "m") == "litert"
    with pytest.raises(ToolkitError, match="the export has no .tflite for it"):
        choose(None, "m")
    assert choose(None, "m", mediapipe=False) == "onnxruntime"  # an ONNX-only model (the expression CNN)
    monkeypatch.setattr(litert, "litert_available", lambda: False)
    with pytest.raises(ToolkitError, match="ai-edge-litert is not installed"):
        choose(twin, "m")
    monkeypatch.setenv(RUNTIME_ENV, "auto")
    assert choose(twin, "m") == "onnxruntime"  # auto without LiteRT: the ONNX, no error
    monkeypatch.setenv(RUNTIME_ENV, "tensorflow")
    with pytest.raises(ToolkitError, match=r"TOOLKIT_RUNTIME='tensorflow': expected one of auto, onnxruntime"):
        choose(twin, "m")


def test_litert_runs_the_tflite_as_onnxruntime_runs_its_onnx(palm_pair, monkeypatch):
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    onnx_path, twin = palm_pair
    ort_session = open_model(onnx_path, 1, "palm detector")
    lite = open_model(onnx_path, 1, "palm detector", twin)
    assert (ort_session.runtime, lite.runtime) == ("onnxruntime", "litert")
    assert [(a.name, list(a.shape)) for a in lite.get_outputs()] == \
        [(a.name, list(a.shape)) for a in ort_session.get_outputs()]  # fmt: skip
    assert lite.get_inputs()[0].type == "tensor(float)"
    x = np.random.default_rng(0).random((1, 192, 192, 3), dtype=np.float32)
    name = ort_session.get_inputs()[0].name
    want = ort_session.run(None, {name: x})
    got = lite.run(None, {name: x})
    for a, b in zip(want, got, strict=True):
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-3 * max(1.0, float(np.abs(a).max()))
    reg, logits = lite.run(["Identity_1", "Identity"], {name: x})  # by name, in the order asked
    assert reg.shape[-1] == 1 and logits.shape[-1] == 18


def test_a_litert_session_serves_threads_at_once(palm_pair):
    session = LiteSession(palm_pair[1], threads=1)
    name = session.get_inputs()[0].name
    inputs = [np.random.default_rng(i).random((1, 192, 192, 3), dtype=np.float32) for i in range(4)]
    want = [session.run(None, {name: x})[1] for x in inputs]
    errors, barrier = [], threading.Barrier(4)

    def work(i: int) -> None:
        barrier.wait()
        for _ in range(5):
            got = session.run(None, {name: inputs[i]})[1]
            if not np.array_equal(got, want[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []  # one interpreter per concurrent caller: nobody reads another's output


def test_a_damaged_tflite_is_one_line(tmp_path, palm_pair, monkeypatch):
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    bad = tmp_path / "palm_detection_full.tflite"
    bad.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(ToolkitError, match=r"palm_detection_full.tflite: LiteRT cannot load it") as info:
        open_model(palm_pair[0], 1, "palm detector", bad)
    assert "\n" not in str(info.value)


def test_an_export_lists_its_twins_with_their_sha256(tmp_path):
    from toolkit.inference.manifest import sha256_file

    twin = tmp_path / "palm_detection_full.tflite"
    twin.write_bytes(b"tflite bytes")
    record = {"tflite": {"palm": twin.name}, "sha256": {twin.name: sha256_file(twin)}}
    assert export_twins(tmp_path, record, tmp_path / "manifest.json", "hands") == {"palm": twin}
    assert export_twins(tmp_path, {"sha256": {}}, tmp_path / "manifest.json", "hands") == {}  # before twins
    twin.write_bytes(b"changed")
    with pytest.raises(ToolkitError, match="sha256 does not match hands.sha256"):
        export_twins(tmp_path, record, tmp_path / "manifest.json", "hands")
    twin.unlink()
    with pytest.raises(ToolkitError, match="the palm model's .tflite listed in hands.tflite is missing"):
        export_twins(tmp_path, record, tmp_path / "manifest.json", "hands")
    with pytest.raises(ToolkitError, match="must map model roles"):
        export_twins(tmp_path, {"tflite": ["x"]}, tmp_path / "manifest.json", "hands")


def test_hand_export_records_carry_the_twins_the_door_runs(tmp_path, monkeypatch):
    """copy_hand_models puts each .tflite beside its ONNX with its sha256; the door's pipeline runs them."""
    from toolkit.inference.handfeatures import FeatureSpec
    from toolkit.inference.handpipe import HandPipeline
    from toolkit.models.hands import HandModels, copy_hand_models

    models = real_hand_models()
    if models is None or not litert.litert_available():
        pytest.skip("needs the real hand models and ai-edge-litert")
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    cache = Path(models[0]).parent
    record = copy_hand_models(tmp_path, HandModels(models[0], models[1], cache / "LICENSE"))
    assert set(record["tflite"]) == {"palm", "landmark"}
    assert all(record["sha256"][name] for name in record["tflite"].values())
    record["features"] = FeatureSpec().record()
    pipeline = HandPipeline(tmp_path, record)
    assert (pipeline.tracker.palm.runtime, pipeline.tracker.landmark.runtime) == ("litert", "litert")
    monkeypatch.setenv(RUNTIME_ENV, "onnxruntime")
    assert HandPipeline(tmp_path, record).tracker.palm.runtime == "onnxruntime"
    shutil.copy(tmp_path / record["files"]["landmark"], tmp_path / record["tflite"]["landmark"])  # not its twin
    monkeypatch.delenv(RUNTIME_ENV)
    with pytest.raises(ToolkitError, match="sha256 does not match hands.sha256"):
        HandPipeline(tmp_path, record)

