"""BlazeFace decoding without TensorFlow: anchors, boxes, weighted NMS, crops, and a tiny fake detector ONNX."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from runtime_support import FACE_ANCHOR, build_fake_detector, make_export

from toolkit.cli import main
from toolkit.errors import ToolkitError
from toolkit.inference.detect import FaceDetector, decode, iou, letterbox, square_crop_box, ssd_anchors, weighted_nms
from toolkit.inference.detector_files import ASSETS, ONNX_NAME, SHIPPED_SHA256, load_detector, manifest_detector
from toolkit.inference.manifest import load_manifest, sha256_file
from toolkit.runtime.camera import make_cropper

ROOT = Path(__file__).resolve().parents[2]
SMILES = ROOT.parent / "shared" / "datasets" / "smiles" / "smile"


def test_anchors_match_the_short_range_layout():
    a = ssd_anchors()
    assert a.shape == (896, 2)
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16])  # 16x16 map, 2 anchors per cell
    np.testing.assert_allclose(a[1], a[0])
    np.testing.assert_allclose(a[2], [1.5 / 16, 0.5 / 16])  # x runs fastest
    np.testing.assert_allclose(a[511], [15.5 / 16, 15.5 / 16])
    np.testing.assert_allclose(a[512], [0.5 / 8, 0.5 / 8])  # 8x8 map, 3 layers x 2 = 6 anchors per cell
    np.testing.assert_allclose(a[517], a[512])
    np.testing.assert_allclose(a[518], [1.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(a[-1], [7.5 / 8, 7.5 / 8])
    np.testing.assert_allclose(a[FACE_ANCHOR], [0.5625, 0.5625])


def test_decode_boxes_keypoints_and_sigmoid_scores():
    anchors = ssd_anchors()
    reg = np.zeros((1, 896, 16), np.float32)
    reg[0, 0] = [12.8, -6.4, 25.6, 12.8] + [1.28, 2.56] * 6
    scores = np.full((1, 896, 1), -5.0, np.float32)
    scores[0, 0, 0] = 1000.0  # clipped to 100 before the sigmoid: no overflow, p = 1
    p, boxes, points = decode(reg, scores, anchors)
    assert p.shape == (1,) and p[0] == pytest.approx(1.0)
    cx, cy = anchors[0] + [0.1, -0.05]
    np.testing.assert_allclose(boxes[0], [cx - 0.1, cy - 0.05, cx + 0.1, cy + 0.05], atol=1e-6)
    np.testing.assert_allclose(points[0], np.tile(anchors[0] + [0.01, 0.02], (6, 1)), atol=1e-6)
    assert decode(reg, scores, anchors, min_score=0.0)[0].shape == (896,)  # sigmoid(-5) > 0 kept at 0


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.3, 0.6], np.float32)
    points = np.zeros((3, 6, 2), np.float32)
    points[1] += 4.0
    found = weighted_nms(scores, boxes, points, 0.3)
    assert [round(d.score, 2) for d in found] == [0.9, 0.6]
    np.testing.assert_allclose(found[0].box, [0.25, 0, 10.25, 10], atol=1e-5)  # (0.9*0 + 0.3*1) / 1.2
    np.testing.assert_allclose(found[0].keypoints, np.full((6, 2), 1.0), atol=1e-5)
    np.testing.assert_allclose(found[1].box, [50, 50, 60, 60])
    assert iou(boxes[0], boxes[2:])[0] == 0.0
    assert iou(boxes[0], boxes[:1])[0] == pytest.approx(1.0)


def test_letterbox_and_square_crop():
    x, scale, offset = letterbox(np.full((64, 128, 3), 255, np.uint8))
    assert x.shape == (1, 128, 128, 3) and scale == 1.0 and offset == (0, 32)
    assert x[0, 0, 0, 0] == -1.0 and x[0, 64, 64, 0] == 1.0  # black border, white frame, in [-1, 1]
    assert square_crop_box((10, 20, 30, 60), (100, 200), margin=0.0) == (0, 20, 40, 60)  # shifted in
    assert square_crop_box((10, 10, 290, 90), (100, 300), margin=0.25) == (100, 0, 200, 100)  # shorter side


def test_fake_detector_finds_crops_and_refuses(tmp_path):
    det = FaceDetector(build_fake_detector(tmp_path / "bf.onnx"))
    white = np.full((256, 256, 3), 255, np.uint8)
    [face] = det.detect(white)
    np.testing.assert_allclose(face.box, [80, 80, 208, 208], atol=1e-3)  # 0.5625 * 256 -+ 64
    np.testing.assert_allclose(face.keypoints[0], [124, 124], atol=1e-3)
    assert det.box(white) == (80, 80, 208, 208)
    assert det(white).shape == (128, 128, 3)
    assert det.detect(np.zeros((240, 320, 3), np.uint8)) == []  # dark: no face, no vote
    assert det(np.zeros((240, 320, 3), np.uint8)) is None
    with pytest.raises(ToolkitError, match="not found"):
        FaceDetector(tmp_path / "nope.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ToolkitError, match="cannot load the detector"):
        FaceDetector(tmp_path / "bad.onnx")
    make_export(tmp_path / "exp")
    with pytest.raises(ToolkitError, match="not a BlazeFace"):
        FaceDetector(tmp_path / "exp" / "model.onnx")


def _with_detector(folder, tmp_path):
    path = build_fake_detector(folder / "face_detection_short_range.onnx")
    m = load_manifest(folder)
    record = {"kind": "blazeface", "file": path.name, "sha256": sha256_file(path), "input_size": 128,
              "min_score": 0.5, "nms_iou": 0.3, "margin": 0.0}  # fmt: skip
    dataclasses.replace(m, detector=record).write(folder)
    return path


def test_door_uses_the_exports_detector(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    plain = make_export(tmp_path / "plain")
    assert manifest_detector(plain) == {} and make_cropper(None, plain) is None  # old manifests: no crop
    shipped = make_cropper("blazeface", plain)  # none in the export nor the cache: the one the toolkit ships
    assert isinstance(shipped, FaceDetector) and shipped.path == ASSETS / "face_detection_short_range.onnx"
    folder = make_export(tmp_path / "with")
    path = _with_detector(folder, tmp_path)
    assert json.loads((folder / "manifest.json").read_text())["detector"]["file"] == path.name
    cropper = make_cropper(None, folder)
    assert isinstance(cropper, FaceDetector) and cropper.path == path
    assert make_cropper("none", folder) is None  # --detector none still wins
    assert cropper(np.full((256, 256, 3), 255, np.uint8)).shape == (128, 128, 3)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ToolkitError, match="not the detector its manifest names"):
        load_detector(folder)


def test_the_shipped_detector_is_the_committed_exports_with_its_licence(tmp_path, monkeypatch):
    """Issue 23, defect 2: the converted BlazeFace ships as package data, checked by sha256, with its licence."""
    onnx, licence = ASSETS / "face_detection_short_range.onnx", ASSETS / "LICENSE.mediapipe"
    assert sha256_file(onnx) == SHIPPED_SHA256 == load_manifest(ROOT / "exported" / "happy").detector["sha256"]
    assert licence.read_text().lstrip().startswith("Apache License") and "Version 2.0" in licence.read_text()
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "empty"))
    assert load_detector(None).path == onnx  # nothing cached, no 'toolkit detector' step
    monkeypatch.setattr("toolkit.inference.detector_files.SHIPPED_SHA256", "0" * 64)
    with pytest.raises(ToolkitError, match="not the face detector this toolkit shipped.*reinstall"):
        load_detector(None)


@pytest.mark.skipif(not SMILES.is_dir(), reason="needs ../shared/datasets/smiles")
def test_collect_with_blazeface_needs_no_detector_step(tmp_path, monkeypatch, capsys):
    """The README's first door command on a fresh install: an empty weights cache, no 'toolkit detector'."""
    from PIL import Image

    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "empty"))
    cam = tmp_path / "cam"
    cam.mkdir()
    for i, name in enumerate(sorted(p.name for p in SMILES.glob("*.jpg"))[:2]):
        frame = Image.new("RGB", (256, 256), (128, 128, 128))  # a face in the middle of a grey frame
        frame.paste(Image.open(SMILES / name).convert("RGB").resize((128, 128)), (64, 64))
        frame.save(cam / f"{i}.png")
    Image.new("RGB", (256, 256), (128, 128, 128)).save(cam / "2.png")  # no face: not saved
    rc = main(["door", "collect", "--camera", str(cam), "--detector", "blazeface", "--label", "smile",
               "--out", str(tmp_path / "photos"), "--count", "5", "--every", "0"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    saved = sorted((tmp_path / "photos" / "smile").iterdir())
    assert len(saved) == 2 and all(Image.open(p).size[0] > 100 for p in saved)
    assert not (tmp_path / "empty").exists()  # nothing fetched, nothing converted


def test_detector_command_without_tf2onnx_is_one_line(tmp_path, monkeypatch, capsys):
    """``toolkit detector`` on a door-only install: the shipped path; a conversion asked for: one line, no download."""
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("tensorflow", "tf2onnx")
                        else real(name, *a))  # fmt: skip
    assert main(["detector"]) == 0
    assert capsys.readouterr().out.startswith(str(ASSETS / "face_detection_short_range.onnx"))
    assert main(["detector", "--force"]) != 0
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and "Traceback" not in out.err
    assert ("needs tensorflow and tf2onnx (pip install 'door-camera-toolkit[train]'); the toolkit ships it "
            "converted") in out.err
    assert not (tmp_path / "cache").exists()  # refused before any download


def test_predict_on_a_face_export_crops_and_says_where_the_face_was(tmp_path):
    """Issue 23, defect 6: /predict on a face export names the face it classified (box, score), as the door crops."""
    from runtime_support import LiveServer, http_get, http_post

    from toolkit.runtime.core.config import ModelConfig, ServeConfig
    from toolkit.runtime.core.holder import ModelHolder
    from toolkit.runtime.server import create_app

    def png(value):
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.full((256, 256, 3), value, np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    plain, folder = make_export(tmp_path / "plain"), make_export(tmp_path / "face")
    _with_detector(folder, tmp_path)
    with LiveServer(create_app(ModelHolder(ModelConfig(folder)), ServeConfig(), door=None, token=None)) as srv:
        face = http_post(srv.url + "/predict", png(255), headers={"content-type": "image/png"}).json()
        assert face["face"]["box"] == [80.0, 80.0, 208.0, 208.0] and 0.5 < face["face"]["score"] <= 1
        assert "presence" not in face["face"] and "hand" not in face
        none = http_post(srv.url + "/predict", png(0), headers={"content-type": "image/png"}).json()
        assert none["face"] is None and none["label"] == "no_smile"  # the whole (dark) image, said so
        spec = http_get(srv.url + "/openapi.json").json()["components"]["schemas"]
        assert set(spec["Prediction"]["properties"]) == {"model", "label", "probability", "threshold", "decision",
                                                         "latency_ms", "probabilities", "hand", "face"}
    with LiveServer(create_app(ModelHolder(ModelConfig(plain)), ServeConfig(), door=None, token=None)) as srv:
        answer = http_post(srv.url + "/predict", png(255), headers={"content-type": "image/png"}).json()
        assert answer["label"] == "smile" and "face" not in answer and "hand" not in answer  # as before


def test_collect_with_a_detector_keeps_room_for_the_face_mesh(tmp_path, monkeypatch, capsys):
    """`door collect --detector blazeface` saves the face with half its box on each side (the face mesh reads a
    square 1.5x the box, turned with the face); the whole frame is the default. A public-domain portrait."""
    import sys

    from PIL import Image

    from toolkit.inference.detect import FaceDetector
    from toolkit.inference.detector_files import detector_path
    from toolkit.runtime.collect import ROOM

    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "empty"))  # the shipped detector, nothing fetched
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_facemesh_parity import prepare

    portrait = Image.fromarray(prepare(ROOT / "tests" / "fixtures" / "facemesh_parity", ""))  # 256x256
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[:, 100:580] = np.asarray(portrait.resize((480, 480)))  # a ~130 px face, off-centre (upper left)
    cam = tmp_path / "cam"
    cam.mkdir()
    Image.fromarray(frame).save(cam / "0.png")
    rc = main(["door", "collect", "--camera", str(cam), "--detector", "blazeface", "--label", "smile",
               "--out", str(tmp_path / "photos"), "--count", "1", "--every", "0"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    (saved,) = (tmp_path / "photos" / "smile").iterdir()
    face = FaceDetector(detector_path()).detect(frame)[0].box
    side = max(face[2] - face[0], face[3] - face[1])
    assert Image.open(saved).size[0] == Image.open(saved).size[1] == pytest.approx((1 + 2 * ROOM) * side, abs=2)
    again = FaceDetector(detector_path()).detect(np.asarray(Image.open(saved).convert("RGB")))
    assert again and ROOM * side * 0.8 < again[0].box[0] < again[0].box[2] < (1 + ROOM * 1.2) * side  # room kept
    assert not (tmp_path / "empty").exists()


def test_the_shipped_tflite_and_an_exports_detector_twin(tmp_path, monkeypatch):
    """The toolkit ships the wheel's own .tflite beside the detector ONNX; an export carries it with its sha256,
    and the door's detector runs it under LiteRT when installed (docs/runtimes.md)."""
    from toolkit.inference import litert
    from toolkit.inference.detector_files import TFLITE_SHA256, shipped_twin_path

    twin = shipped_twin_path()
    assert twin is not None and sha256_file(twin) == TFLITE_SHA256
    monkeypatch.delenv(litert.RUNTIME_ENV, raising=False)
    want = "litert" if litert.litert_available() else "onnxruntime"
    assert load_detector(None).session.runtime == want
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    shutil.copy2(ASSETS / ONNX_NAME, folder / ONNX_NAME)
    shutil.copy2(twin, folder / twin.name)
    record = {"file": ONNX_NAME, "sha256": sha256_file(folder / ONNX_NAME), "tflite": twin.name,
              "tflite_sha256": TFLITE_SHA256}  # fmt: skip
    monkeypatch.setattr("toolkit.inference.detector_files.manifest_detector", lambda f: record)
    assert load_detector(folder).session.runtime == want
    monkeypatch.setenv(litert.RUNTIME_ENV, "onnxruntime")
    assert load_detector(folder).session.runtime == "onnxruntime"
    (folder / twin.name).write_bytes(b"changed")
    with pytest.raises(ToolkitError, match="not the detector .tflite its manifest names"):
        load_detector(folder)
