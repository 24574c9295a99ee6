"""The committed face-landmark door export (exported/happy-face) still matches its manifest and still works.

Built by ``toolkit face-model`` on smiles (docs/face-landmarks.md); a Pi runs it with onnxruntime alone, so a
stale or tampered file must fail here. Its figures were measured on held-out photos, clean and through each
camera degradation, and its threshold on the degraded copies' out-of-fold scores: the manifest must say so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from toolkit.inference.manifest import load_manifest, sha256_file
from toolkit.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "exported" / "happy-face"
SMILES = ROOT.parent / "shared" / "datasets" / "smiles"


def test_files_match_the_manifest_and_carry_their_licences():
    m = load_manifest(FOLDER)
    assert m.pipeline == "facemesh" and m.labels == ("no_smile", "smile") and m.output_kind == "sigmoid"
    assert m.serve == "head.onnx" and sha256_file(FOLDER / "head.onnx") == m.files["head.onnx"].sha256
    face = m.face
    assert set(face["files"]) >= {"detector", "landmark"} and face["blocks"] == face["head"]["blocks"]
    assert ("expression" in face["files"]) == ("expression" in face["blocks"])  # the CNN travels only when read
    for role, name in face["files"].items():
        assert sha256_file(FOLDER / name) == face["sha256"][name], f"{name} changed since export"
        source = face["sources"][role]
        assert (FOLDER / source["licence"]).is_file() and source["licence_name"] in ("Apache-2.0", "MIT")
    assert not m.detector  # the detector is a link of the chain, not the door's crop: one pass per frame
    assert "degraded copies" in m.data["threshold"]["source"]
    assert set(m.data["test_figures"]) == {"clean", "colorcast", "lowres", "blur", "jpeg"}
    assert m.figures_kind == "photos" and m.synthetic_warning(FOLDER) is None
    assert not list(FOLDER.glob("*.png")) and not list(FOLDER.glob("*.jpg"))  # no photos of people shipped


def test_the_chain_finds_a_small_face_in_a_door_frame_and_says_no_face_otherwise():
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_facemesh_parity import prepare

    predictor = Predictor(FOLDER)
    frame = prepare(ROOT / "tests" / "fixtures" / "facemesh_parity", "door")  # a ~25 px face, upscaled, in 640x480
    got = predictor.predict(frame)
    assert got.details["face"] is not None and 0.0 <= got.probability <= 1.0
    x0, y0, x1, y1 = got.details["face"]["box"]
    assert 192 < x0 < x1 < 448 and 112 < y0 < y1 < 368  # inside the pasted photo
    none = predictor.predict(np.full((480, 640, 3), 90, np.uint8))
    assert none.label == "no_face" and none.decision is False


@pytest.mark.datasets
def test_it_still_tells_real_smiles_apart():
    if not SMILES.is_dir():
        pytest.skip(f"{SMILES} is absent")
    from toolkit.data import load_data

    x, y = load_data(f"{SMILES}?n=60&seed=777", 64).split(seed=0, val=0.0, test=0.0).train.numpy()
    predictor = Predictor(FOLDER)
    results = predictor.predict_batch(list(x))
    accuracy = np.mean([int(r.label == "smile") == t for r, t in zip(results, y)])
    assert accuracy >= 0.8, f"{accuracy:.2%} on real face photos (no face counted wrong)"
    assert all(r.decision == (r.probability >= r.threshold) for r in results if r.label != "no_face")
