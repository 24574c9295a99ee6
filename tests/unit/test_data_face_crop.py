"""``?crop=face``: training photos cut by the door's own detector; photos with no face listed, not dropped silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runtime_support import build_fake_detector  # tests/runtime's helper, importable through tests/conftest.py

from toolkit.data import load_data
from toolkit.data.spec import parse_spec
from toolkit.errors import ToolkitError
from toolkit.inference.detector_files import ASSETS, cached_detector_path, load_detector


def _photos(root: Path) -> Path:
    # The fake detector sees a face in bright square photos (cropped to their middle half) and none in dark ones.
    for label, values in (("no_smile", (250, 240, 10)), ("smile", (245, 235, 230))):
        (root / label).mkdir(parents=True)
        for i, v in enumerate(values):
            img = np.full((96, 96, 3), v, np.uint8)
            img[30:66, 30:66] = (v, 0, 0)  # a red middle: the crop keeps it, the whole photo dilutes it
            Image.fromarray(img).save(root / label / f"{i}.png")
    return root


def test_crop_face_uses_the_cached_detector_and_lists_misses(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    root = _photos(tmp_path / "photos")
    spec = f"{root}?crop=face"
    assert load_detector(None).path.parent == ASSETS  # nothing cached: the shipped detector, no fetch step
    cached_detector_path().parent.mkdir(parents=True)
    build_fake_detector(cached_detector_path(), box_px=64.0)  # half of the 128 input: the photo's middle
    ds = load_data(spec, 32)
    assert ds.report.no_face == ["no_smile/2.png"]  # the dark photo
    assert "no face found (left out): 1" in ds.report.lines()
    assert ds.report.to_dict()["no_face"] == ["no_smile/2.png"]
    x, _ = ds.all().numpy()
    assert len(x) == 5
    plain, _ = load_data(str(root), 32).all().numpy()
    # The crop is the photo's 30..78 square (the fake face sits at 0.5625 of the frame): red up to 36/48 of it.
    assert x[0, 2, 2, 1] < 5 and x[0, 30, 30, 1] > 200
    assert (x[:, :, :, 1] < 5).mean() > (plain[:, :, :, 1] < 5).mean()


def test_crop_option_parsing():
    assert parse_spec("photos?crop=face&n=4").crop == "face"
    assert parse_spec("photos?n=4").crop is None
    with pytest.raises(ToolkitError, match="the only crop is crop=face"):
        parse_spec("photos?crop=hands")
    with pytest.raises(ToolkitError, match="photo folders, not to synthetic"):
        load_data("synthetic:happy?crop=face&n=8", 16)
