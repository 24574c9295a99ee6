"""Fetching the detector from a wheel: a fake mediapipe wheel in a local find-links folder, never the network."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from toolkit.errors import ToolkitError
from toolkit.models import detector as D

MEMBER = b"fake tflite bytes"


def detector_members(member: bytes = MEMBER) -> dict:
    """What a fake mediapipe wheel holds for the detector: its model file and the licence."""
    return {D.BLAZEFACE.member: member, D.BLAZEFACE.licence: "Apache License 2.0 (test copy)\n"}


@pytest.fixture
def links(tmp_path, mediapipe_wheel):
    """A find-links folder holding the fake wheel."""
    mediapipe_wheel(tmp_path / "links", detector_members())
    return tmp_path / "links"


@pytest.fixture
def spec(links):
    # The fake wheel's own name and hashes; everything else is the real record.
    wheel = next(links.glob("*.whl"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return dataclasses.replace(D.BLAZEFACE, wheel=wheel.name, wheel_sha256=digest,
                               sha256=hashlib.sha256(MEMBER).hexdigest())


@pytest.fixture
def fake_convert(monkeypatch):
    calls = []

    def convert(tflite, onnx_path, opset=17):
        calls.append(tflite.read_bytes())
        onnx_path.write_bytes(b"onnx from " + tflite.read_bytes())
        return 2e-5

    monkeypatch.setattr(D, "convert", convert)
    return calls


def test_fetch_from_find_links_caches_and_reuses(tmp_path, monkeypatch, links, spec, fake_convert):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    path = D.ensure_detector(find_links=str(links), spec=spec)
    assert path == tmp_path / "cache" / "weights" / "blazeface" / "face_detection_short_range.onnx"
    assert path.read_bytes() == b"onnx from " + MEMBER
    assert (path.parent / "LICENSE.mediapipe").read_text().startswith("Apache")
    record = json.loads((path.parent / "source.json").read_text())
    assert record["sha256"] == spec.sha256 and record["onnx_max_diff"] == 2e-5
    assert not list(path.parent.glob(".blazeface-*"))  # the work folder is gone
    # Second call: served from the cache, with the wheel folder gone (no network, no pip).
    (links / spec.wheel).unlink()
    assert D.ensure_detector(find_links=str(links), spec=spec) == path and len(fake_convert) == 1


def test_fetch_errors_are_one_line(tmp_path, monkeypatch, spec, fake_convert, mediapipe_wheel):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ToolkitError, match=r"cannot download .*pass its path as --wheel") as err:
        D.ensure_detector(find_links=str(empty), spec=spec)
    assert "\n" not in str(err.value)
    bad = mediapipe_wheel(tmp_path / "bad", detector_members(b"tampered"),
                          name="mediapipe-0.10.21-cp311-cp311-other.whl")
    with pytest.raises(ToolkitError, match="has sha256 .* expected"):
        D.ensure_detector(bad, spec=spec)
    with pytest.raises(ToolkitError, match="not a mediapipe 0.10.21 wheel"):
        D.ensure_detector(_other(tmp_path), spec=spec)
    with pytest.raises(ToolkitError, match="is not that of"):  # the real wheel name with other bytes
        D.ensure_detector(_renamed(bad, D.BLAZEFACE.wheel))
    assert not (tmp_path / "cache" / "weights" / "blazeface" / "face_detection_short_range.onnx").exists()


def _other(tmp_path):
    path = tmp_path / "other-1.0-py3-none-any.whl"
    path.write_bytes(b"PK")
    return path


def _renamed(path, name):
    target = path.parent / name
    target.write_bytes(path.read_bytes())
    return target


def test_export_option_and_copy_into_the_folder(tmp_path, monkeypatch):
    from toolkit.export.config import ExportConfig
    from toolkit.inference.detector_files import cached_detector_path
    from toolkit.settings import SettingError

    assert ExportConfig(source="run", out="x", detector="blazeface").detector == "blazeface"
    with pytest.raises(SettingError):
        ExportConfig(source="run", out="x", detector="haar")
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    src = cached_detector_path()
    src.parent.mkdir(parents=True)
    src.write_bytes(b"detector bytes")
    (src.parent / "LICENSE.mediapipe").write_text("Apache")
    out = tmp_path / "export"
    out.mkdir()
    record = D.copy_detector(out)
    assert (out / record["file"]).read_bytes() == b"detector bytes"
    assert (out / record["licence"]).read_text() == "Apache"
    assert record["sha256"] == hashlib.sha256(b"detector bytes").hexdigest()
    assert record["input_size"] == 128 and record["min_score"] == 0.5 and record["licence_name"] == "Apache-2.0"
    assert record["precision"] == "float32"  # third-party: the manifest says it is not int8
