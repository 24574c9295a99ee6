"""Fetching the hand models: a fake mediapipe wheel in a find-links folder (never the network), conversion faked."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from toolkit.errors import ToolkitError
from toolkit.models import fetch
from toolkit.models import hands as MH
from toolkit.models import rewrite as rewrites

PALM, LANDMARK = b"fake palm tflite", b"fake landmark tflite"


@pytest.fixture
def fake(tmp_path, monkeypatch, mediapipe_wheel):
    """The fake wheel in a find-links folder, the records pointing at it, a counting pip and a fake tf2onnx."""
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    wheel = mediapipe_wheel(tmp_path / "links", {MH.PALM.member: PALM, MH.LANDMARK.member: LANDMARK,
                                                  MH.PALM.licence: "Apache License 2.0 (test copy)\n"})
    monkeypatch.setenv(fetch.PIP_ARGS_ENV, f"--no-index --find-links {wheel.parent}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    for name, payload in (("PALM", PALM), ("LANDMARK", LANDMARK)):
        record = dataclasses.replace(getattr(MH, name), wheel=wheel.name, wheel_sha256=digest,
                                     sha256=hashlib.sha256(payload).hexdigest())  # fmt: skip
        monkeypatch.setattr(MH, name, record)
    calls = {"pip": 0, "convert": []}
    real_pip = fetch._pip_download

    def pip(*args, **kwargs):
        calls["pip"] += 1
        return real_pip(*args, **kwargs)

    def convert(tflite, onnx_path, opset=MH.OPSET):
        calls["convert"].append(tflite.name)
        onnx_path.write_bytes(b"onnx of " + tflite.read_bytes())
        return 1e-5

    def rewrite(source, atol):
        calls["rewrite"] = calls.get("rewrite", 0) + 1
        target = MH.rewritten_path(source)
        target.write_bytes(b"fast " + source.read_bytes())
        return target, 0.0

    monkeypatch.setattr(fetch, "_pip_download", pip)
    monkeypatch.setattr(MH, "convert", convert)
    monkeypatch.setattr(rewrites, "write_rewritten", rewrite)  # record_rewrite writes through it
    return wheel, calls


def test_one_download_for_both_files_then_the_cache(fake):
    wheel, calls = fake
    models = MH.ensure_hand_models()
    folder = fetch.weights_root() / "mediapipe-0.10.21"
    # the palm detector as rewritten for speed at conversion (toolkit.models.rewrite), cached under its own key
    assert (models.palm, models.landmark) == (folder / "palm_detection_full.relu.onnx",
                                              folder / "hand_landmark_full.onnx")  # fmt: skip
    assert models.palm.read_bytes() == b"fast onnx of " + PALM
    assert models.landmark.read_bytes() == b"onnx of " + LANDMARK
    assert models.licence.read_text().startswith("Apache") and "mediapipe==0.10.21" in models.source
    assert models.sha256["palm_detection_full.onnx"] == hashlib.sha256(b"onnx of " + PALM).hexdigest()
    assert calls["pip"] == 1 and len(calls["convert"]) == 2
    record = json.loads((folder / MH.RECORD).read_text())
    assert record["opset"] == 17 and record["atol"] == 1.5e-4 and set(record["max_diff"]) == {
        "palm_detection_full.onnx", "hand_landmark_full.onnx"}  # fmt: skip
    wheel.unlink()  # the second call needs neither the wheel nor tf2onnx
    assert MH.ensure_hand_models() == models and calls["pip"] == 1 and len(calls["convert"]) == 2
    assert record["rewrite"]["key"] == MH.REWRITE and calls["rewrite"] == 1
    record["rewrite"]["key"] = "an older rewrite"  # a new rewrite: only the rewrite is redone
    (folder / MH.RECORD).write_text(json.dumps(record))
    assert MH.ensure_hand_models() == models and calls["rewrite"] == 2 and len(calls["convert"]) == 2
    models.landmark.write_bytes(b"damaged")  # an ONNX that is not the one recorded is converted again
    assert MH.ensure_hand_models().landmark.read_bytes() == b"onnx of " + LANDMARK and len(calls["convert"]) == 4


def test_offline_without_the_wheel_is_one_line(fake, tmp_path, monkeypatch):
    wheel, _ = fake
    wheel.unlink()
    with pytest.raises(ToolkitError) as err:
        MH.ensure_hand_models()
    text = str(err.value)
    assert "\n" not in text and text.startswith("cannot download")
    assert "pip download mediapipe==0.10.21 --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 " \
           "--python-version 3.11" in text and "--weights" in text  # fmt: skip
    with pytest.raises(ToolkitError, match="not a mediapipe 0.10.21 wheel"):
        MH.ensure_hand_models(str(_other(tmp_path)))


def _other(tmp_path):
    path = tmp_path / "other-1.0-py3-none-any.whl"
    path.write_bytes(b"PK")
    return path


def test_a_tampered_model_file_is_refused(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(MH, "LANDMARK", dataclasses.replace(MH.LANDMARK, sha256="0" * 64))
    with pytest.raises(ToolkitError, match="hand_landmark_full.tflite has sha256"):
        MH.ensure_hand_models()
    assert not (fetch.weights_root() / "mediapipe-0.10.21" / "hand_landmark_full.onnx").exists()


def test_copy_into_an_export_folder(fake, tmp_path):
    models = MH.ensure_hand_models()
    out = tmp_path / "export"
    out.mkdir()
    record = MH.copy_hand_models(out, models)
    assert record["files"] == {"palm": "palm_detection_full.relu.onnx", "landmark": "hand_landmark_full.onnx"}
    # each .tflite travels beside its ONNX (LiteRT runs it at the door), every file with its sha256
    assert record["tflite"] == {"palm": "palm_detection_full.tflite", "landmark": "hand_landmark_full.tflite"}
    names = [*record["files"].values(), *record["tflite"].values()]
    assert record["sha256"] == {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in names}
    assert record["precision"] == "float32" and record["source"] == models.source
    assert (out / record["licence"]).read_text().startswith("Apache") and record["licence_name"] == "Apache-2.0"
