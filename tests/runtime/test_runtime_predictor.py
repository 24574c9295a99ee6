"""Predictor: manifest checks, every input kind, batch, threads."""

from __future__ import annotations

import io
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from runtime_support import build_softmax_onnx, frame, jpeg, make_export

from toolkit.errors import ImageError, ToolkitError
from toolkit.inference.manifest import sha256_file
from toolkit.inference.predictor import Predictor


def test_predicts_from_bytes_file_array_and_pil(export_dir, tmp_path):
    pred = Predictor(export_dir)
    path = tmp_path / "happy.png"
    path.write_bytes(jpeg(220, fmt="PNG"))
    for source in (jpeg(220), path, str(path), frame(220), Image.fromarray(frame(220))):
        p = pred.predict(source)
        assert p.label == "smile" and p.decision is True and p.probability > 0.9
        assert p.threshold == 0.5 and p.latency_ms > 0
    sad = pred.predict(jpeg(30))
    assert sad.label == "no_smile" and sad.decision is False and sad.probability < 0.1


def test_any_mode_and_exif_orientation(export_dir):
    pred = Predictor(export_dir)
    # A grey-level (L) image and a palette image decode to RGB like any other.
    for mode in ("L", "P", "RGBA"):
        buf = io.BytesIO()
        Image.fromarray(frame(220)).convert(mode).save(buf, format="PNG")
        assert pred.predict(buf.getvalue()).decision is True
    # EXIF orientation 6 (rotate 90) turns a 40x80 portrait into 80x40: the centre region changes.
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40] = 255  # left half bright
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", exif=exif, quality=95)
    rotated = pred.load(buf.getvalue())
    plain = pred.load(Image.fromarray(img))
    assert not np.allclose(rotated.astype(float), plain.astype(float), atol=30)


def test_batch_matches_single_and_threads(export_dir):
    pred = Predictor(export_dir, threads=2)
    values = [10, 90, 128, 170, 250]
    batch = pred.predict_batch([frame(v) for v in values])
    singles = [pred.predict(frame(v)) for v in values]
    assert [b.probability for b in batch] == pytest.approx([s.probability for s in singles], abs=1e-6)
    assert [b.decision for b in batch] == [False, False, True, True, True]
    with ThreadPoolExecutor(8) as pool:  # thread-safe: concurrent calls give the same answers
        results = list(pool.map(lambda v: pred.predict(frame(v)).probability, values * 10))
    assert results == pytest.approx([s.probability for s in singles] * 10, abs=1e-6)


def test_threshold_from_manifest_and_override(tmp_path):
    folder = make_export(tmp_path / "t", threshold=0.995)
    assert Predictor(folder).predict(frame(220)).decision is False  # p ~ 0.99 < 0.995
    assert Predictor(folder, threshold=0.9).predict(frame(220)).decision is True
    folder2 = make_export(tmp_path / "none", threshold=None)
    assert Predictor(folder2).threshold == 0.5


def test_softmax(softmax_dir):
    pred = Predictor(softmax_dir)
    img = frame(10)
    img[..., 2] = 250
    p = pred.predict(img)
    assert p.label == "blue" and p.decision is None and p.threshold is None
    assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_tampered_file_is_refused(export_dir, tmp_path):
    folder = tmp_path / "x"
    shutil.copytree(export_dir, folder)
    with open(folder / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ToolkitError, match=r"model.onnx: sha256 .* files\['model.onnx'\].sha256"):
        Predictor(folder)


def _edit_manifest(folder, changes: dict) -> None:
    """Set manifest fields; keys are '/'-separated paths (file names contain dots)."""
    m = json.loads((folder / "manifest.json").read_text())
    for key, value in changes.items():
        target = m
        *path, last = key.split("/")
        for part in path:
            target = target[part]
        target[last] = value
    (folder / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"input/name": "pixels"}, "do not match input.name 'pixels'"),
        ({"input/shape": [None, 32, 32, 3]}, "does not match input.shape"),
        ({"output_kind": "softmax", "labels": ["a", "b", "c"]}, "does not match output_kind 'softmax'"),
        ({"serve": "other.onnx"}, "no entry 'other.onnx'"),
        ({"input/dtype": "uint8"}, "does not match input.dtype 'uint8'"),
    ],
)
def test_manifest_mismatch_names_the_field(export_dir, tmp_path, changes, match):
    folder = tmp_path / "m"
    shutil.copytree(export_dir, folder)
    _edit_manifest(folder, changes)
    with pytest.raises(ToolkitError, match=match):
        Predictor(folder)


def test_missing_and_corrupt(tmp_path, export_dir):
    with pytest.raises(ToolkitError, match="no manifest"):
        Predictor(tmp_path)
    folder = tmp_path / "c"
    shutil.copytree(export_dir, folder)
    (folder / "model.onnx").write_bytes(b"not onnx")
    _edit_manifest(folder, {"files/model.onnx/sha256": sha256_file(folder / "model.onnx")})
    with pytest.raises(ToolkitError, match="onnxruntime cannot load it"):
        Predictor(folder)
    (folder / "model.onnx").unlink()
    with pytest.raises(ToolkitError, match="missing"):
        Predictor(folder)


def test_wrong_output_width(tmp_path, export_dir):
    folder = tmp_path / "w"
    shutil.copytree(export_dir, folder)
    build_softmax_onnx(folder / "model.onnx")  # 3 columns under a sigmoid manifest
    _edit_manifest(folder, {"files/model.onnx/sha256": sha256_file(folder / "model.onnx")})
    with pytest.raises(ToolkitError, match=r"expected float \[N, 1\]"):
        Predictor(folder)


def test_bad_images(export_dir):
    pred = Predictor(export_dir, max_pixels=10_000)
    with pytest.raises(ImageError, match="empty"):
        pred.predict(b"")
    with pytest.raises(ImageError, match="not a readable image"):
        pred.predict(b"hello world")
    with pytest.raises(ImageError, match="truncated|not a readable"):
        pred.predict(jpeg(200)[:200])
    with pytest.raises(ImageError, match="exceeds the limit"):
        pred.predict(jpeg(200, size=(200, 200)))
    with pytest.raises(ToolkitError, match="expected shape"):
        pred.run(np.zeros((1, 32, 32, 3), np.float32))


def test_old_manifests_load_and_say_where_their_figures_come_from(tmp_path, export_dir):
    folder = tmp_path / "old"
    shutil.copytree(export_dir, folder)
    _edit_manifest(folder, {"schema": "toolkit.manifest/1", "data": {"spec": "synthetic:happy"}})
    manifest = Predictor(folder).manifest
    assert manifest.figures_kind == "synthetic"
    assert manifest.synthetic_warning(folder).startswith(f"{folder}: its threshold and false-accept rate were "
                                                         "measured on synthetic images (synthetic:happy)")
    _edit_manifest(folder, {"schema": "toolkit.manifest/2", "data": {"spec": "photos/", "kind": "photos"}})
    assert Predictor(folder).manifest.synthetic_warning(folder) is None
    _edit_manifest(folder, {"schema": "toolkit.manifest/9"})
    with pytest.raises(ToolkitError, match="field 'schema' must be one of toolkit.manifest/1, toolkit.manifest/2"):
        Predictor(folder)
