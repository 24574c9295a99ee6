"""The hand chain's image sampling: the palm detector's view of an image and the landmark model's rotated crop.

Every function samples an image at ``origin + u*ex + v*ey`` for output pixel (u, v), bilinear, with pixel centres
on integer coordinates (as OpenCV's warps inside MediaPipe): :func:`warp` in numpy (the reference), OpenCV's
warpAffine when it is installed, Pillow's affine transform else. The palm detector's views (:func:`palm_view`:
letterboxed, zoomed out, turned) are affine maps of the image itself: no framed or turned copy is ever made.
"""

from __future__ import annotations

import math

import numpy as np

from toolkit.inference.detect import opencv

PALM_SIZE = 192


def warp(image: np.ndarray, origin: np.ndarray, ex: np.ndarray, ey: np.ndarray, size: int,
         replicate: bool) -> np.ndarray:  # fmt: skip
    """Bilinear ``size`` x ``size`` crop: output pixel (u, v) samples the image at ``origin + u*ex + v*ey``.

    Pixel centres are integer coordinates; outside the image the border is replicated or zero. uint8 images
    give values rounded to integers, as OpenCV's warp of a uint8 image does.
    """
    h, w = image.shape[:2]
    u = np.arange(size, dtype=np.float32)
    xs = np.float32(origin[0]) + u[None, :] * np.float32(ex[0]) + u[:, None] * np.float32(ey[0])
    ys = np.float32(origin[1]) + u[None, :] * np.float32(ex[1]) + u[:, None] * np.float32(ey[1])
    x0, y0 = np.floor(xs), np.floor(ys)
    fx, fy = xs - x0, ys - y0
    x0, y0 = x0.astype(np.int32), y0.astype(np.int32)
    flat = np.ascontiguousarray(image[:, :, :3]).reshape(-1, 3)  # gathered as they are, converted after
    out = np.zeros((size, size, 3), np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            weight = wx * wy
            if not replicate:
                weight = weight * ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h))
            index = np.clip(yi, 0, h - 1) * w + np.clip(xi, 0, w - 1)
            out += flat[index].astype(np.float32) * weight[..., None]
    return np.round(out) if image.dtype == np.uint8 else out


def _cv2_warp(cv2, image: np.ndarray, origin, ex, ey, size: int, border: int) -> np.ndarray:
    # OpenCV's bilinear warp, as MediaPipe's ImageToTensorCalculator runs it: output (u, v) reads the image at
    # origin + u*ex + v*ey (pixel centres on integers), rounded fixed-point arithmetic.
    m = np.array([[ex[0], ey[0], origin[0]], [ex[1], ey[1], origin[1]]], np.float64)
    return cv2.warpAffine(np.ascontiguousarray(image[:, :, :3], dtype=np.uint8), m, (size, size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=border, borderValue=0)


def crop(image: np.ndarray, origin: np.ndarray, ex: np.ndarray, ey: np.ndarray, size: int,
         replicate: bool) -> np.ndarray:  # fmt: skip
    """:func:`warp` of a uint8 image by Pillow's affine transform: the same samples, a few times faster.

    Pillow's bilinear sampling truncates where :func:`warp` rounds (values up to 1 lower, 0.5 on average), and
    fills with zero only beyond half a pixel outside the image (replicating inside that band): both well inside
    the landmark parity tolerance (docs/hand-landmarks.md). For a replicated border, the part of the image the
    crop reads is cut out and padded with its edge pixels first, so every sample falls inside it.
    """
    cv2 = opencv()
    if cv2 is not None:
        return _cv2_warp(cv2, image, origin, ex, ey, size, cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT)
    from PIL import Image

    h, w = image.shape[:2]
    far = (size - 1) * np.stack([ex, ey, ex + ey])
    corners = np.vstack([origin, origin + far])
    x0, y0 = (np.floor(corners.min(0)) - 1).astype(int)
    x1, y1 = (np.ceil(corners.max(0)) + 2).astype(int)
    offset = np.zeros(2)
    source = image[:, :, :3]
    if replicate:
        cx0, cy0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
        cx1, cy1 = max(min(x1, w), cx0 + 1), max(min(y1, h), cy0 + 1)
        source = image[cy0:cy1, cx0:cx1, :3]
        pads = (max(cy0 - y0, 0), max(y1 - cy1, 0)), (max(cx0 - x0, 0), max(x1 - cx1, 0))
        if any(p for pair in pads for p in pair):
            source = np.pad(source, (*pads, (0, 0)), mode="edge")
        offset = np.array([cx0 - pads[1][0], cy0 - pads[0][0]], np.float64)
    # Pillow maps output pixel centres (u + 0.5, v + 0.5) and samples at input centres + 0.5.
    o = np.asarray(origin, np.float64) - offset + 0.5 - 0.5 * (ex + ey)
    picture = Image.fromarray(np.ascontiguousarray(source, dtype=np.uint8))
    out = picture.transform((size, size), Image.Transform.AFFINE, (ex[0], ey[0], o[0], ex[1], ey[1], o[1]),
                            Image.Resampling.BILINEAR)  # fmt: skip
    return np.asarray(out)


def letterbox_sample(image: np.ndarray, size: int = PALM_SIZE, corner: np.ndarray | None = None,
                     side: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:  # fmt: skip
    """The palm detector's input (1, size, size, 3) float32 in [0, 1], and the letterbox (corner, side).

    The same samples as :func:`warp` on the letterbox square (bilinear, zero outside the image, rounded for
    uint8), computed as two 1-D interpolations: rows first, then columns. An axis-aligned scale needs no 2-D
    gather, and the palm detector is sensitive enough to Pillow's truncation to move one hard palm by pixels.
    ``corner``, ``side``: another square than the image's letterbox (e.g. :func:`palm_view`'s zoomed out).
    """
    h, w = image.shape[:2]
    if corner is None or side is None:
        corner, side = letterbox_axes(h, w)
    cv2 = opencv()
    if cv2 is not None and image.dtype == np.uint8:
        step = side / size
        pixels = _cv2_warp(cv2, image, corner, (step, 0.0), (0.0, step), size, cv2.BORDER_CONSTANT)
        return (pixels.astype(np.float32) * np.float32(1 / 255))[None], corner, side
    step = np.float32(side / size)
    u = np.arange(size, dtype=np.float32)

    def taps(start: float, n: int):
        # Per output pixel along one axis: (its two source indices clipped, their weights, zeroed outside).
        pos = np.float32(start) + u * step
        i0 = np.floor(pos)
        f = pos - i0
        i0 = i0.astype(np.int64)
        w0 = (1 - f) * ((i0 >= 0) & (i0 < n))
        w1 = f * ((i0 + 1 >= 0) & (i0 + 1 < n))
        return np.clip(i0, 0, n - 1), np.clip(i0 + 1, 0, n - 1), w0.astype(np.float32), w1.astype(np.float32)

    r0, r1, a0, a1 = taps(corner[1], h)
    c0, c1, b0, b1 = taps(corner[0], w)
    rows = (a0 > 0) | (a1 > 0)  # letterbox rows wholly outside the image stay zero
    pixels = image[:, :, :3]
    band = pixels[r0[rows]].astype(np.float32) * a0[rows, None, None] + pixels[r1[rows]] * a1[rows, None, None]
    out = np.zeros((size, size, 3), np.float32)
    out[rows] = band[:, c0] * b0[None, :, None] + band[:, c1] * b1[None, :, None]
    if image.dtype == np.uint8:
        out = np.round(out)
    return (out * np.float32(1 / 255))[None], corner, side


def palm_view(h: int, w: int, zoom: float = 0.0, degrees: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the palm detector's input lies in an h x w image: (origin, ex, ey), input pixel (u, v) reads the image
    at ``origin + u*ex + v*ey``.

    The letterbox square of the image (:func:`letterbox_axes`); ``zoom``: of the image framed first by a black
    border of that fraction of its size on each side (the same samples as letterboxing that bigger picture, without
    making it); ``degrees``: the square turned about its centre, so the detector sees the image turned by that
    many degrees clockwise (a hand held at 40 degrees looks nearer upright in a view turned by 30).
    """
    corner, side = zoomed_letterbox(h, w, zoom)
    step = side / PALM_SIZE
    if not degrees:
        return corner, np.array([step, 0.0]), np.array([0.0, step])
    a = math.radians(degrees)
    ex = np.array([math.cos(a), math.sin(a)]) * step
    ey = np.array([-math.sin(a), math.cos(a)]) * step
    return corner + side / 2 - (ex + ey) * PALM_SIZE / 2, ex, ey


def zoomed_letterbox(h: int, w: int, zoom: float) -> tuple[np.ndarray, float]:
    """:func:`letterbox_axes` of the image framed by ``zoom`` of its size on each side, in the image's pixels."""
    by, bx = round(h * zoom), round(w * zoom)
    corner, side = letterbox_axes(h + 2 * by, w + 2 * bx)
    return corner - np.array([bx, by], np.float64), side


def turned_views(zoom_out: float, turns) -> list[tuple[float, float]]:
    """The palm detector's turned views (zoom, degrees) tried, in order, after the plain and zoomed-out ones."""
    zooms = (0.0, zoom_out) if zoom_out > 0 else (0.0,)
    return [(z, float(d)) for z in zooms for d in turns]


def palm_sample(image: np.ndarray, zoom: float = 0.0, degrees: float = 0.0):
    """The palm detector's input (1, 192, 192, 3) float32 in [0, 1] for :func:`palm_view`, and that view's axes.

    Zero outside the image. Not turned, it is :func:`letterbox_sample`'s (of the framed picture when zoomed out).
    """
    h, w = image.shape[:2]
    origin, ex, ey = palm_view(h, w, zoom, degrees)
    if not degrees:
        corner, side = zoomed_letterbox(h, w, zoom)
        return letterbox_sample(image, PALM_SIZE, corner, side)[0], origin, ex, ey
    cv2 = opencv()
    if cv2 is not None and image.dtype == np.uint8:
        pixels = _cv2_warp(cv2, image, origin, ex, ey, PALM_SIZE, cv2.BORDER_CONSTANT)
    else:
        pixels = warp(image, origin, ex, ey, PALM_SIZE, replicate=False)
    return (pixels.astype(np.float32) * np.float32(1 / 255))[None], origin, ex, ey


def sample(image: np.ndarray, origin: np.ndarray, ex: np.ndarray, ey: np.ndarray, size: int,
           replicate: bool) -> np.ndarray:  # fmt: skip
    """The model input (1, size, size, 3) float32 in [0, 1]: :func:`crop` for uint8 images, else :func:`warp`."""
    if image.dtype == np.uint8:
        pixels = crop(image, origin, ex, ey, size, replicate)
    else:
        pixels = warp(image, origin, ex, ey, size, replicate)
    return (pixels.astype(np.float32) * np.float32(1 / 255))[None]


def letterbox_axes(h: int, w: int) -> tuple[np.ndarray, float]:
    """The square (top-left corner, side) that holds the whole image, centred: the palm detector's input."""
    side = float(max(h, w))
    return np.array([(w - side) / 2, (h - side) / 2]), side
