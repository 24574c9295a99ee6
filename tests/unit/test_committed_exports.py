"""The committed door export (exported/happy) still matches its manifest and still works.

A Pi user runs `toolkit door serve --model exported/happy` without training anything, so a stale or
tampered file must fail here, not at the door. `make demo` writes to runs/demo/happy, never here.
"""

from pathlib import Path

import numpy as np
import pytest

from toolkit.data import load_data
from toolkit.runtime.manifest import load_manifest, sha256_file
from toolkit.runtime.predictor import Predictor

FOLDER = Path(__file__).resolve().parents[2] / "exported" / "happy"


def test_every_file_matches_its_manifest_hash_and_input_spec():
    m = load_manifest(FOLDER)
    assert m.labels == ("no_smile", "smile") and m.output_kind == "sigmoid"
    assert tuple(m.input.shape[1:]) == (64, 64, 3) and m.input.range == (0, 255) and m.input.color == "RGB"
    assert {e.format for e in m.files.values()} == {"onnx", "tflite"}
    assert {e.quantization for e in m.files.values()} >= {"none", "int8"}
    for name, entry in m.files.items():
        assert sha256_file(FOLDER / name) == entry.sha256, f"{name} changed since export"
        assert (FOLDER / name).stat().st_size == entry.bytes
    assert m.serve in m.files and m.files[m.serve].format == "onnx"
    assert (FOLDER / "report.html").is_file() and (FOLDER / "report.md").is_file()


@pytest.fixture(scope="module")
def faces():
    ds = load_data("synthetic:happy?n=60&seed=12345", 64)  # faces the demo never trained on
    return ds.split(seed=0, val=0.0, test=0.0).train.numpy()


@pytest.mark.parametrize("name", sorted(p.name for p in FOLDER.glob("*.onnx")))
def test_onnx_files_still_tell_smiles_apart(name, faces):
    x, y = faces
    predictor = Predictor(FOLDER, file=name)
    results = predictor.predict_batch(list(x))
    accuracy = np.mean([int(r.label == "smile") == t for r, t in zip(results, y)])
    assert accuracy >= 0.9, f"{name}: {accuracy:.2%} on fresh synthetic faces"
    assert all(r.decision == (r.probability >= r.threshold) for r in results)


@pytest.mark.parametrize("name", sorted(p.name for p in FOLDER.glob("*.tflite")))
def test_tflite_files_agree_with_the_served_onnx(name, faces):
    pytest.importorskip("ai_edge_litert")
    from toolkit.export.validate import load_runner, predict

    x, _ = faces
    reference = predict(load_runner(FOLDER / load_manifest(FOLDER).serve), x.astype(np.float32))
    probs = predict(load_runner(FOLDER / name), x.astype(np.float32))
    assert np.mean((probs[:, -1] >= 0.5) == (reference[:, -1] >= 0.5)) >= 0.95
