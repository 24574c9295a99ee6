"""Image decoding shared by training, prediction and the door runtime (numpy and Pillow only).

Every path that turns a photo into model input goes through :func:`decode_image`, so the door sees
exactly the pixels training saw: EXIF orientation applied, any mode converted to RGB, resized to the
model's input with the same filter.
"""

from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from toolkit.errors import ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Pillow format names that decode_image opens ("JPEG" includes MPO, the multi-frame JPEG of many cameras).
FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "GIF")
# A 64x64 model never needs more than this; larger files are refused before decoding (zip bombs).
DEFAULT_MAX_PIXELS = 40_000_000
RESAMPLE = Image.Resampling.BILINEAR
# Decoding is I/O plus C code that drops the GIL; a few more threads than cores hides file latency.
DECODE_WORKERS = min(8, 2 * (os.cpu_count() or 1))

ImageSource = bytes | bytearray | memoryview | str | Path | np.ndarray | Image.Image


def is_image_file(path: Path) -> bool:
    """True when the file name has an image suffix, in any letter case."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def open_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None,
               draft: tuple[int, int] | None = None) -> Image.Image:  # fmt: skip
    """Open and fully decode an image as RGB with its EXIF orientation applied.

    Args:
        source: encoded bytes, a file path, an HxW / HxWxC uint8 array, or a PIL image.
        max_pixels: refuse images with more pixels than this (decompression bombs).
        name: how to call the source in error messages (defaults to the path or "image").
        draft: (width, height) the caller needs at least: a JPEG is decoded at the smallest of its 1/2, 1/4,
            1/8 scales still that large (Pillow's ``draft``), which cuts memory and time by up to 64x.

    Raises:
        ImageError: the data is not a readable image or breaks the pixel limit.
    """
    if isinstance(source, Image.Image):
        img = source
        label = name or "image"
    elif isinstance(source, np.ndarray):
        return Image.fromarray(_array_to_rgb(source, name or "array"))
    else:
        if isinstance(source, (str, Path)):
            label = name or str(source)
            try:
                data = Path(source).read_bytes()
            except OSError as exc:
                raise ImageError(f"{label}: cannot read file ({exc.strerror or exc})") from exc
        else:
            label = name or "image"
            data = bytes(source)
        if not data:
            raise ImageError(f"{label}: empty file (0 bytes), not an image")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's notes on odd files; the outcome is what counts
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                # Only the formats photos come in: Pillow would otherwise open dozens by their content,
                # among them EPS, which runs Ghostscript on the file.
                img = Image.open(io.BytesIO(data), formats=FORMATS)
                if img.width * img.height > max_pixels:
                    raise ImageError(
                        f"{label}: {img.width}x{img.height} pixels exceeds the limit of {max_pixels:,}; "
                        "downscale the image first"
                    )
                if draft is not None and img.format == "JPEG":
                    img.draft("RGB", draft)
                img.load()
        except ImageError:
            raise
        except UnidentifiedImageError as exc:
            raise ImageError(f"{label}: not a readable image (not a JPEG, PNG, BMP, WebP or GIF file)") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"{label}: not a readable image ({_one_line(exc)})") from exc
        except Exception as exc:  # hostile bytes reach decoder paths that raise anything; none may escape
            raise ImageError(f"{label}: corrupt or truncated image ({_one_line(exc)})") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(source, Image.Image):
                img = ImageOps.exif_transpose(img)  # the caller's image stays as it was
            else:  # ours: turned in place, so an upright photo is not copied (25 MP = 75 MB more at peak)
                ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # a broken EXIF block must not lose an otherwise good photo
        pass
    try:
        return _to_rgb(img)
    except Exception as exc:  # a mode Pillow cannot convert
        raise ImageError(f"{label}: cannot convert mode {img.mode} to RGB ({_one_line(exc)})") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:200]


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: transparent pixels are background, not black.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        return Image.fromarray((arr * (255.0 / max(hi, 255.0))).clip(0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def _array_to_rgb(arr: np.ndarray, label: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{label}: expected an HxW, HxWx1, HxWx3 or HxWx4 array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise ImageError(f"{label}: array must hold finite numbers in 0..255, got dtype {arr.dtype}")
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def resize(img: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """Resize to ``size`` (an int for a square, or (height, width)) with the toolkit's one filter."""
    h, w = (size, size) if isinstance(size, int) else size
    if img.size == (w, h):
        return img
    return img.resize((w, h), RESAMPLE)


def decode_image(
    source: ImageSource,
    size: int | tuple[int, int] | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """Decode any image into an HxWx3 uint8 RGB array, resized to ``size`` when given.

    Raises:
        ImageError: unreadable, truncated or oversized input; the message names ``name`` or the path.
    """
    if size is None and isinstance(source, np.ndarray):  # a camera frame: checked, not copied through Pillow twice
        view = _array_to_rgb(source, name or "array").view()
        view.flags.writeable = False  # as Pillow's array: the caller's frame is never written through it
        return view
    img = open_image(source, max_pixels=max_pixels, name=name)
    if size is not None:
        img = resize(img, size)
    return np.asarray(img, dtype=np.uint8)


def decode_files(paths, size: tuple[int, int]) -> np.ndarray:
    """Decode ``paths`` into one uint8 array (N, H, W, 3) with a thread pool."""
    out = np.empty((len(paths), size[0], size[1], 3), dtype=np.uint8)

    def work(i: int) -> None:
        out[i] = decode_image(paths[i], size)

    with ThreadPoolExecutor(DECODE_WORKERS) as pool:
        list(pool.map(work, range(len(paths))))
    return out
