"""Image-folder loader on tiny fixtures: odd modes, EXIF, corrupt files, duplicates, streaming."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolkit.data import load_data
from toolkit.errors import ToolkitError

SIZE = 16


def _noise(seed: int, size=(SIZE, SIZE)) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr)


def make_folder(root: Path, per_class: dict[str, int], suffix: str = ".png") -> Path:
    """root/<class>/<i><suffix> with distinct random images."""
    seed = 0
    for name, count in per_class.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            _noise(seed).save(root / name / f"{i}{suffix}")
            seed += 1
    return root


def test_odd_files_are_decoded_skipped_or_ignored(tmp_path, caplog):
    root = make_folder(tmp_path / "d", {"a": 3, "b": 3})
    _noise(100).save(root / "a" / "upper.JPG", quality=95)
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(root / "a" / "rgba.png")  # fully transparent red
    Image.new("L", (8, 8), 100).save(root / "b" / "gray.png")
    _noise(101).convert("P").save(root / "b" / "palette.png")
    jpeg = io.BytesIO()
    _noise(102, (64, 64)).save(jpeg, "JPEG")
    (root / "b" / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / ".hidden.png").write_bytes(b"junk")
    with caplog.at_level(logging.WARNING, logger="toolkit.data"):
        ds = load_data(str(root), SIZE)
    report = ds.report
    assert ds.labels == ("a", "b")
    assert report.class_counts == {"a": 5, "b": 5}  # 3 + JPG + rgba, 3 + gray + palette
    assert sorted(p for p, _ in report.skipped) == ["a/empty.png", "b/truncated.jpg"]
    assert report.ignored == ["a/notes.txt"]
    assert {"RGBA", "L", "P", "RGB"} <= set(report.image_modes)
    skipped_lines = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(skipped_lines) == 1 and "2 unreadable" in skipped_lines[0].getMessage()
    assert "a/empty.png" in skipped_lines[0].getMessage()

    x, y = ds.split(val=0, test=0).train.numpy()
    assert x.shape == (10, SIZE, SIZE, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    # Sorted file order: a/0.png a/1.png a/2.png a/rgba.png a/upper.JPG, then b/...
    assert (x[3] == 255).all()  # transparent pixels composite on white, not black
    assert (x[5 + 3] == 100).all()  # b/gray.png, the grayscale value copied to R, G and B

    with pytest.raises(ToolkitError, match="truncated.jpg|empty.png"):
        load_data(str(root), SIZE, strict=True)


def test_exif_orientation_is_applied(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 2, "b": 2})
    arr = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high: left half red, right half blue
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(arr).save(root / "a" / "rotated.jpg", quality=95, exif=exif.tobytes())
    ds = load_data(str(root), (40, 20))  # (height, width): the upright shape
    x, _ = ds.split(val=0, test=0).train.numpy()
    img = x[2].astype(int)  # a/0.png, a/1.png, a/rotated.jpg
    assert ds.report.image_sizes[(40, 20)] == 1  # stored size, before the transpose
    assert img[:15, :, 0].mean() > 200 and img[:15, :, 2].mean() < 60  # red on top
    assert img[25:, :, 2].mean() > 200 and img[25:, :, 0].mean() < 60  # blue below


def test_duplicates_and_conflicts_are_reported_and_kept_together(tmp_path, caplog):
    root = make_folder(tmp_path / "d", {"a": 12, "b": 12})
    shutil.copy(root / "a" / "0.png", root / "a" / "dup.png")
    shutil.copy(root / "a" / "1.png", root / "b" / "conflict.png")
    with caplog.at_level(logging.WARNING, logger="toolkit.data"):
        ds = load_data(str(root), SIZE)
    assert sorted(ds.report.duplicates) == [("a/0.png", "a/dup.png"), ("a/1.png", "b/conflict.png")]
    assert ds.report.conflicts == [("a/1.png", "b/conflict.png")]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("byte-identical" in m for m in messages) == 1
    assert sum("label conflict" in m for m in messages) == 1
    for seed in range(10):
        splits = ds.split(seed=seed, val=0.3, test=0.3)
        fps = [{bytes(img) for img in s.numpy()[0]} for s in (splits.train, splits.val, splits.test)]
        assert not (fps[0] & fps[1]) and not (fps[0] & fps[2]) and not (fps[1] & fps[2])


def test_streamed_split_matches_in_memory(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 6, "b": 5}, suffix=".jpg")
    Image.new("L", (30, 20), 90).save(root / "b" / "grå ü.png")  # non-ASCII names survive tf.string
    memory = load_data(str(root), SIZE).split(seed=1)
    streamed = load_data(str(root), SIZE, max_in_memory_bytes=100).split(seed=1)
    assert streamed.train.streamed and not memory.train.streamed
    parts = zip(
        (memory.train, memory.val, memory.test), (streamed.train, streamed.val, streamed.test), strict=True
    )
    for a, b in parts:
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.numpy()[0], b.numpy()[0])
    # The tf.data path decodes inside the graph: the same pixels, unbatched, uint8 / int32.
    ds = streamed.train.tf_dataset()
    assert ds.element_spec[0].shape == (SIZE, SIZE, 3) and ds.element_spec[0].dtype.name == "uint8"
    assert ds.element_spec[1].dtype.name == "int32"
    xs = np.stack([x for x, _ in ds.as_numpy_iterator()])
    np.testing.assert_array_equal(xs, memory.train.numpy()[0])
    shuffled = sorted(int(y) for _, y in streamed.train.tf_dataset(shuffle=True, seed=3).as_numpy_iterator())
    assert shuffled == sorted(memory.train.y.tolist())
    mem_tf = np.stack([x for x, _ in memory.train.tf_dataset().as_numpy_iterator()])
    np.testing.assert_array_equal(mem_tf, xs)


def test_spec_query_subsamples_stratified(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 10, "b": 5})
    ds = load_data(f"{root}?n=6&seed=2", SIZE)
    assert ds.report.class_counts == {"a": 4, "b": 2}
    again = load_data(f"{root}?n=6&seed=2", SIZE)
    assert ds.split(val=0, test=0).train.fingerprint == again.split(val=0, test=0).train.fingerprint


@pytest.mark.parametrize(
    "layout, message",
    [
        ({}, "no class sub-folders"),
        ({"only": 2}, "only one class"),
        ({"a": 2, "b": 0}, "class folder has no images"),
    ],
)
def test_folder_errors(tmp_path, layout, message):
    root = tmp_path / "d"
    root.mkdir()
    for name, count in layout.items():
        (root / name).mkdir()
        for i in range(count):
            _noise(i).save(root / name / f"{i}.png")
    with pytest.raises(ToolkitError, match=message) as info:
        load_data(str(root), SIZE)
    assert "\n" not in str(info.value)


def test_class_with_only_corrupt_files_is_an_error(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 2})
    (root / "b").mkdir()
    (root / "b" / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(ToolkitError, match="no readable image"):
        load_data(str(root), SIZE)


def test_importing_toolkit_data_does_not_import_tensorflow():
    code = "import sys, toolkit.data, toolkit.cli; assert 'tensorflow' not in sys.modules, 'tf imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_pipeline_prints_each_data_warning_once(tmp_path, log_lines, monkeypatch):
    """Issue 23, defect 5: a pipeline printed the same duplicate / label-conflict warning 4 times and the
    unreadable-files warning 5 times, once per step that loads the data."""
    from toolkit.data.report import each_warning_once
    from toolkit.pipeline import run as pipeline_run

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i + 100 * (label == "b"),) * 3).save(tmp_path / label / f"{i}.png")
    shutil.copy(tmp_path / "a" / "0.png", tmp_path / "b" / "copy.png")  # the same image under two labels
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    lines = log_lines("toolkit.data")
    load_data(str(tmp_path), 8)
    assert len(lines) == 3  # unreadable, duplicates, conflicts: one line each
    lines.clear()
    steps = lambda p, work_root: [load_data(str(tmp_path), 8) for _ in range(5)]  # noqa: E731 - five steps
    monkeypatch.setattr(pipeline_run, "check_ready", lambda p: None)
    monkeypatch.setattr(pipeline_run, "_run_steps", steps)
    pipeline_run.run_pipeline(object())
    assert len(lines) == 3 and sum("unreadable" in line for line in lines) == 1
    with each_warning_once():  # the next run says it again
        load_data(str(tmp_path), 8)
    assert len(lines) == 6
