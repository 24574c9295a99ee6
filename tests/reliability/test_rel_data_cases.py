"""The hostile inputs the fuzzers draw from, each checked once by hand with its expected outcome."""

import logging
import os

import h5py
import numpy as np
import pytest
from PIL import Image

from benchmarks.fuzz_cases import encode, png_header, zlib_bomb_png
from toolkit.data import load_data
from toolkit.errors import ImageError, ToolkitError
from toolkit.images import DEFAULT_MAX_PIXELS, decode_image


def _noise(w=12, h=12, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _folder(root, per_class=2):
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            _noise(seed=ord(c) * 10 + i).save(root / c / f"{i}.png")
    return root


def test_one_pixel_image():
    assert (decode_image(encode(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"), 8) == (9, 8, 7)).all()


def test_sixteen_bit_png_is_scaled_to_eight_bits():
    arr = np.full((4, 4), 65535, np.uint16)
    arr[0, 0] = 0
    out = decode_image(encode(Image.fromarray(arr), "PNG"))
    assert out.dtype == np.uint8 and out[1, 1].tolist() == [255, 255, 255] and out[0, 0].tolist() == [0, 0, 0]


def test_cmyk_jpeg_becomes_rgb():
    out = decode_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    assert out.shape == (8, 8, 3) and out[4, 4, 0] > 200 and out[4, 4, 1] < 60  # red


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_images_give_their_first_frame(fmt):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = decode_image(data)
    assert out[4, 4, 0] > 200 and out[4, 4, 2] < 60


@pytest.mark.parametrize("data, match", [
    (png_header(100_000, 100_000), "exceeds"),  # Pillow refuses this one itself, at open
    (zlib_bomb_png(7000), "exceeds the limit"),  # 49 M pixels from a 50 KB file
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n", "not a JPEG, PNG, BMP, WebP or GIF"),
    (encode(Image.new("RGB", (8, 8)), "TIFF"), "not a JPEG, PNG, BMP, WebP or GIF"),
    (encode(_noise(64, 64), "JPEG")[:300], "corrupt or truncated"),
    (b"", "empty file"),
])
def test_hostile_images_are_one_line_errors(data, match):
    with pytest.raises(ImageError, match=match) as info:
        decode_image(data, 32, name="x.jpg")
    assert "\n" not in str(info.value)


def test_a_bomb_under_the_limit_decodes_in_bounded_time():
    side = int(DEFAULT_MAX_PIXELS ** 0.5) - 1000  # just under the pixel limit
    assert decode_image(zlib_bomb_png(side), 32).shape == (32, 32, 3)


def test_symlink_loops_dangling_links_fifos_and_folders_named_like_images(tmp_path):
    root = _folder(tmp_path / "d")
    os.symlink("..", root / "a" / "up")
    os.symlink(".", root / "b" / "here")
    os.symlink(root / "a" / "l2.png", root / "a" / "l1.png")
    os.symlink(root / "a" / "l1.png", root / "a" / "l2.png")
    os.symlink("/nonexistent/x.jpg", root / "b" / "gone.jpg")
    os.mkfifo(root / "b" / "pipe.png")  # reading it would block forever
    (root / "a" / "folder.jpg").mkdir()
    ds = load_data(str(root), 16)
    assert len(ds) == 4 and ds.labels == ("a", "b")


def test_non_utf8_file_names_load_and_non_utf8_class_names_are_refused(tmp_path, caplog):
    root = os.fsencode(_folder(tmp_path / "d"))
    with open(os.path.join(root, b"a", b"caf\xe9.png"), "wb") as f:
        f.write(encode(_noise(seed=5), "PNG"))
    with open(os.path.join(root, b"b", b"\xff\xfe.jpg"), "wb") as f:
        f.write(b"not an image")
    with caplog.at_level(logging.WARNING, logger="toolkit.data"):
        ds = load_data(os.fsdecode(root), 16)
    assert len(ds) == 5 and len(ds.report.skipped) == 1
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    os.makedirs(os.path.join(root, b"\xff"))
    with open(os.path.join(root, b"\xff", b"x.png"), "wb") as f:
        f.write(encode(_noise(seed=6), "PNG"))
    with pytest.raises(ToolkitError, match="not valid UTF-8") as info:
        load_data(os.fsdecode(root), 16)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [b"line\nbreak", b"tab\there", b"\x1b[31mred"])
def test_control_characters_in_names_never_split_a_message(tmp_path, bad):
    root = os.fsencode(_folder(tmp_path / "d"))
    with open(os.path.join(root, b"a", bad + b".png"), "wb") as f:
        f.write(b"junk")  # skipped: its name appears in the warning
    ds = load_data(os.fsdecode(root), 16)
    assert all("\n" not in name and "\x1b" not in name for name, _ in ds.report.skipped)
    os.makedirs(os.path.join(root, bad))
    with pytest.raises(ToolkitError, match="control characters") as info:
        load_data(os.fsdecode(root), 16)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def _h5(path, **arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if isinstance(value, str) and value == "group":
                f.create_group(key)
            elif isinstance(value, str) and value == "huge":
                f.create_dataset(key, shape=(10**9, 64, 64, 3), dtype="uint8", chunks=(1, 64, 64, 3))
            elif isinstance(value, str) and value == "dangling":
                f[key] = h5py.SoftLink("/nowhere")
            else:
                f[key] = value
    return str(path)


X = np.zeros((4, 8, 8, 3), np.uint8)
Y = np.array([0, 1, 0, 1])


@pytest.mark.parametrize("arrays, match", [
    ({"train_set_x": "huge", "train_set_y": Y}, "more than half this machine's memory"),
    ({"train_set_x": "group", "train_set_y": Y}, "is a group, not an array"),
    ({"train_set_x": X, "train_set_y": "dangling"}, "missing key 'train_set_y'"),
    ({"train_set_x": X.astype(np.float32), "train_set_y": Y}, "expected uint8 pixels"),
    ({"train_set_x": X[..., :1], "train_set_y": Y}, r"expected \(N, height, width, 3\)"),
    ({"train_set_x": X, "train_set_y": Y[:3]}, "one label per image"),
    ({"train_set_x": X, "train_set_y": Y.astype(np.float32)}, "expected integer or string labels"),
    ({"train_set_x": X, "train_set_y": Y + 5, "list_classes": np.array([b"a", b"b"])}, "not in list_classes"),
    ({"other": X}, "missing key 'train_set_x'"),
])
def test_course_h5_with_wrong_keys_dtypes_and_shapes(tmp_path, arrays, match):
    with pytest.raises(ToolkitError, match=match) as info:
        load_data(_h5(tmp_path / "train_x.h5", **arrays), 8)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("data", [b"", b"\x89HDF\r\n\x1a\n" + b"\0" * 100, os.urandom(2048)])
def test_h5_that_is_not_hdf5(tmp_path, data):
    (tmp_path / "train_x.h5").write_bytes(data)
    with pytest.raises(ToolkitError, match="not a readable HDF5 file"):
        load_data(str(tmp_path / "train_x.h5"), 8)
