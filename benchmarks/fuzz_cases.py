"""The hostile inputs :mod:`benchmarks.fuzz` feeds the data loaders, as hypothesis strategies.

Image bytes (valid images in every mode and format, mutated ones, headers claiming huge sizes, zlib
bombs, random bytes), class-folder trees (odd names, symlink loops, FIFOs, folders named like images)
and course ``.h5`` files (wrong keys, dtypes, shapes, groups, links, declared terabytes, truncation),
with the writers that put a drawn case on disk.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np

IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF")
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".PNG", ".JPG")


# ---- image bytes ---------------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(width: int, height: int, bit_depth: int = 8, colour: int = 2, body: bytes = b"") -> bytes:
    """A PNG that claims ``width`` x ``height`` (a decompression bomb's header) with ``body`` as its data."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def zlib_bomb_png(side: int) -> bytes:
    """A real, valid greyscale PNG of side x side zero pixels: a few KB that inflate to side**2 bytes."""
    raw = zlib.compress((b"\0" + b"\0" * side) * side, 9)
    return png_header(side, side, 8, 0, raw)


def encode(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def sample_images():
    """A hypothesis strategy of (suffix, bytes, description) covering the cases the loaders must survive."""
    from hypothesis import strategies as st
    from PIL import Image

    @st.composite
    def valid(draw):
        w, h = draw(st.integers(1, 48)), draw(st.integers(1, 48))
        mode = draw(st.sampled_from(["RGB", "L", "RGBA", "LA", "P", "1", "CMYK", "I;16", "I", "F"]))
        fmt = draw(st.sampled_from(IMAGE_FORMATS))
        seed = draw(st.integers(0, 2**16))
        rng = np.random.default_rng(seed)
        if mode in ("I;16", "I", "F"):
            dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
            img = Image.fromarray(rng.integers(0, 65535, (h, w)).astype(dtype))
        else:
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
        kw = {}
        if fmt == "GIF" or (fmt == "WEBP" and draw(st.booleans())):
            frames = [img.convert("RGB").rotate(a) for a in range(draw(st.integers(1, 3)))]
            img, kw = frames[0], {"save_all": True, "append_images": frames[1:], "duration": 50, "loop": 0}
        try:
            data = encode(img, fmt, **kw)
        except (OSError, ValueError, KeyError, TypeError):  # a mode this format cannot store: store it as TIFF
            data = encode(img, "TIFF")
            fmt = "TIFF"
        return data, f"{fmt} {mode} {w}x{h}" + (" animated" if kw else "")

    @st.composite
    def mutated(draw):
        data, what = draw(valid())
        how = draw(st.sampled_from(["truncate", "flip", "splice", "zero-tail"]))
        arr = bytearray(data)
        if how == "truncate":
            cut = draw(st.integers(0, max(0, len(arr) - 1)))
            return bytes(arr[:cut]), f"{what} truncated at {cut}/{len(arr)}"
        if how == "flip":
            for _ in range(draw(st.integers(1, 8))):
                i = draw(st.integers(0, len(arr) - 1))
                arr[i] ^= 1 << draw(st.integers(0, 7))
            return bytes(arr), f"{what} with flipped bits"
        if how == "zero-tail":
            cut = draw(st.integers(0, len(arr)))
            return bytes(arr[:cut]) + bytes(len(arr) - cut), f"{what} zeroed from {cut}"
        junk = draw(st.binary(min_size=0, max_size=64))
        at = draw(st.integers(0, len(arr)))
        return bytes(arr[:at]) + junk + bytes(arr[at:]), f"{what} with {len(junk)} bytes spliced at {at}"

    @st.composite
    def huge(draw):
        w = draw(st.integers(1, 2**31 - 1))
        h = draw(st.integers(1, 2**31 - 1))
        kind = draw(st.sampled_from(["png-header", "jpeg-sof", "gif-screen", "bmp-header"]))
        if kind == "png-header":
            return png_header(w, h), f"PNG header claiming {w}x{h}"
        if kind == "jpeg-sof":
            base = bytearray(encode(Image.new("RGB", (8, 8)), "JPEG"))
            sof = base.find(b"\xff\xc0")
            w, h = w % 65536 or 1, h % 65536 or 1
            base[sof + 5:sof + 9] = struct.pack(">HH", h, w)
            return bytes(base), f"JPEG SOF claiming {w}x{h}"
        if kind == "gif-screen":
            base = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
            w, h = w % 65536 or 1, h % 65536 or 1
            base[6:10] = struct.pack("<HH", w, h)
            base[base.find(b",") + 5:base.find(b",") + 9] = struct.pack("<HH", w, h)
            return bytes(base), f"GIF claiming {w}x{h}"
        base = bytearray(encode(Image.new("RGB", (8, 8)), "BMP"))
        base[18:26] = struct.pack("<ii", w, -h if draw(st.booleans()) else h)
        return bytes(base), f"BMP header claiming {w}x{h}"

    others = st.sampled_from([
        (b"", "empty file"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n", "EPS (would run Ghostscript)"),
        (b"GIF89a not really", "GIF signature, nothing else"),
        (zlib_bomb_png(4000), "valid 4000x4000 zlib bomb PNG (16 MB from 16 KB)"),
        (zlib_bomb_png(7000), "valid 7000x7000 zlib bomb PNG (over the pixel limit)"),
        (b"\x89PNG\r\n\x1a\n", "PNG signature only"),
        (b"\xff\xd8\xff", "JPEG start only"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP header only"),
        (b"BM" + b"\0" * 60, "BMP header of zeros"),
    ])
    rand = st.binary(min_size=1, max_size=2048).map(lambda b: (b, f"{len(b)} random bytes"))
    body = st.one_of(valid(), mutated(), huge(), others, rand)
    return st.tuples(st.sampled_from(SUFFIXES), body).map(lambda t: (t[0], t[1][0], t[1][1]))


# ---- image folders -------------------------------------------------------------------------------

def good_png(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)), "PNG")


def _fs_name(raw: bytes) -> bytes:
    """A file name from arbitrary bytes: no slash or NUL, not '.' or '..', at most 100 bytes."""
    name = raw.replace(b"/", b"_").replace(b"\0", b"_")[:100] or b"x"
    return b"_" + name if name in (b".", b"..") else name


def sample_folders():
    """A strategy describing a class folder tree: files (name bytes, content), odd entries, class names."""
    from hypothesis import strategies as st

    name = st.binary(min_size=1, max_size=24).map(_fs_name)
    entry = st.tuples(name, st.sampled_from(SUFFIXES + (".txt", "", ".gif")), sample_images())
    odd = st.sampled_from(["dir-loop", "file-loop", "dangling", "self-loop", "dir-named-jpg", "fifo", "none"])
    classes = st.one_of(st.just((b"a", b"b")), st.tuples(name, name).filter(lambda t: t[0] != t[1]))
    return st.fixed_dictionaries({
        "classes": classes,
        "files": st.lists(st.tuples(st.integers(0, 1), entry), min_size=1, max_size=5),
        "odd": st.lists(st.tuples(st.integers(0, 1), odd), max_size=3),
        "goods": st.tuples(st.integers(0, 2), st.integers(0, 2)),
    })


def build_tree(root: bytes, case: dict) -> int:
    """Write the described tree under ``root`` (bytes paths, so any name works); returns files written."""
    written = 0
    classes = case["classes"]
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
    for ci, count in enumerate(case["goods"]):
        for j in range(count):
            with open(os.path.join(root, classes[ci], b"good%d.png" % j), "wb") as f:
                f.write(good_png(ci * 10 + j))
            written += 1
    for i, (ci, (stem, suffix, (_, data, _))) in enumerate(case["files"]):
        path = os.path.join(root, classes[ci], stem + b"%d" % i + suffix.encode())
        try:
            with open(path, "wb") as f:
                f.write(data)
            written += 1
        except OSError:  # a name the file system refuses (too long in bytes): nothing to test
            pass
    for i, (ci, kind) in enumerate(case["odd"]):
        base = os.path.join(root, classes[ci])
        if kind == "dir-loop":
            os.symlink(b"..", os.path.join(base, b"up%d" % i))
        elif kind == "self-loop":
            os.symlink(b".", os.path.join(base, b"here%d" % i))
        elif kind == "file-loop":
            a, b = os.path.join(base, b"la%d.png" % i), os.path.join(base, b"lb%d.png" % i)
            os.symlink(b, a)
            os.symlink(a, b)
        elif kind == "dangling":
            os.symlink(b"/nonexistent/x.png", os.path.join(base, b"gone%d.jpg" % i))
        elif kind == "dir-named-jpg":
            os.makedirs(os.path.join(base, b"folder%d.jpg" % i), exist_ok=True)
        elif kind == "fifo" and hasattr(os, "mkfifo"):
            os.mkfifo(os.path.join(base, b"pipe%d.png" % i))
    return written


# ---- course .h5 files ----------------------------------------------------------------------------

H5_KEYS = ("train_set_x", "train_set_y", "list_classes", "test_set_x", "test_set_y", "other")


# A correct course file (4 images, both classes): the h5 fuzzer always tries it besides what it draws.
VALID_H5 = ("h5", {"train_set_x": ("dataset", "uint8", (4, 8, 8, 3), 1), "train_set_y": ("labels01", "int64", (4,), 0),
                   "list_classes": ("dataset", "S8", (2,), 0)}, "train_x.h5")


def sample_h5():
    """A strategy of .h5 descriptions: per key a dataset (dtype, shape), a group, a link, or nothing."""
    from hypothesis import strategies as st

    dtype = st.sampled_from(["uint8", "int8", "int64", "float32", "float64", "bool", "S8", "vlen-str", "compound",
                             "complex64", "uint16"])
    shape = st.lists(st.integers(0, 6), min_size=0, max_size=5).map(tuple)
    dataset = st.tuples(st.just("dataset"), dtype, shape, st.integers(0, 2**16))
    pixels = st.tuples(st.just("dataset"), st.just("uint8"),
                       st.tuples(st.integers(0, 6), st.integers(1, 12), st.integers(1, 12), st.just(3)),
                       st.integers(0, 2**16))
    labels = st.tuples(st.just("dataset"), st.sampled_from(["int64", "uint8", "S8", "float32", "vlen-str"]),
                       st.sampled_from([(0,), (3,), (6,), (1, 6), (6, 1), (2, 3)]), st.integers(0, 2**16))
    huge = st.tuples(st.just("huge"), st.just("uint8"), st.just((10**9, 64, 64, 3)), st.just(0))
    other = st.sampled_from([("group",), ("soft-dangling",), ("external",), ("scalar",)])
    value = st.one_of(dataset, pixels, labels, huge, other)
    body = st.dictionaries(st.sampled_from(H5_KEYS), value, max_size=6)
    raw = st.binary(min_size=0, max_size=512)

    @st.composite
    def near_valid(draw):  # a correct course file with at most one key changed or removed
        n = draw(st.integers(2, 6))
        good = {"train_set_x": ("dataset", "uint8", (n, 8, 8, 3), draw(st.integers(0, 99))),
                "train_set_y": ("labels01", "int64", (n,), draw(st.integers(0, 99))),
                "list_classes": ("dataset", "S8", (2,), 0)}
        key = draw(st.sampled_from([*good, None]))
        if key is not None:
            change = draw(st.one_of(st.none(), value))
            if change is None:
                del good[key]
            else:
                good[key] = change
        return good

    return st.one_of(
        st.tuples(st.just("h5"), near_valid(), st.just("train_x.h5")),
        st.tuples(st.just("h5"), body, st.sampled_from(["train_x.h5", "test_x.h5", "train_x.hdf5"])),
        st.tuples(st.just("bytes"), raw, st.sampled_from(["train_x.h5", "test_x.h5"])),
        st.tuples(st.just("truncated"), body, st.integers(0, 4096)),
    )


def _h5_value(f, key: str, spec: tuple) -> None:
    import h5py

    kind = spec[0]
    if kind == "group":
        f.create_group(key)
    elif kind == "soft-dangling":
        f[key] = h5py.SoftLink("/nowhere")
    elif kind == "external":
        f[key] = h5py.ExternalLink("/nonexistent/file.h5", "/x")
    elif kind == "scalar":
        f[key] = 7
    elif kind == "huge":  # declared 12 TB, stored as nothing (chunked, never written)
        f.create_dataset(key, shape=spec[2], dtype="uint8", chunks=(1, 64, 64, 3))
    elif kind == "labels01":  # both classes present
        f.create_dataset(key, data=np.arange(spec[2][0]) % 2)
    else:
        _, dtype, shape, seed = spec
        rng = np.random.default_rng(seed)
        n = int(np.prod(shape)) if shape else 1
        if dtype == "vlen-str":
            data = np.array([str(v) for v in rng.integers(0, 3, n)], dtype=object).reshape(shape)
            f.create_dataset(key, data=data, dtype=h5py.string_dtype())
        elif dtype == "compound":
            f.create_dataset(key, data=np.zeros(shape, dtype=[("a", "i4"), ("b", "f4")]))
        elif dtype == "S8":
            f.create_dataset(key, data=np.array([b"c%d" % v for v in rng.integers(0, 3, n)]).reshape(shape))
        else:
            f.create_dataset(key, data=(rng.random(n) * 4).astype(dtype).reshape(shape))


def write_h5(path: Path, case: tuple) -> Path:
    import h5py

    kind = case[0]
    if kind == "bytes":
        path = path.with_name(case[2])
        path.write_bytes(case[1])
        return path
    target = path.with_name(case[2] if kind == "h5" else "train_x.h5")
    with h5py.File(target, "w") as f:
        for key, spec in case[1].items():
            _h5_value(f, key, spec)
    if kind == "truncated":
        data = target.read_bytes()
        target.write_bytes(data[: min(case[2], len(data))])
    return target
