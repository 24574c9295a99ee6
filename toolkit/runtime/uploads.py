"""Images uploaded to ``/predict``, decoded in bounded memory: what a hostile upload may cost the door's Pi.

A PNG of 1 x 24,999,999 pixels is 48 KB on the wire and was 700 MB in the server: its pixel count passed the
25 MP limit, but no camera frame has that shape, and resizing a sliver to the model's square multiplies it.
So, before a pixel is decoded:

- the header's sides and aspect ratio must be a camera frame's (:data:`MAX_SIDE`, :data:`MAX_ASPECT`);
- a JPEG is decoded at a reduced scale (``draft``) no smaller than the chain's working resolution: the
  classifier's input (twice over) for a plain export; a full frame for a chain that finds a hand or a face
  in the frame first (it crops from the frame, so the frame keeps its detail);
- decodes share a pixel budget (:class:`DecodeBudget`): the decoded pixels of all uploads in flight stay
  under ``--max-pixels``, so three clients sending 25 MP images decode one at a time, not three at once.
"""

from __future__ import annotations

import io
import threading
import warnings

import numpy as np
from PIL import Image

from toolkit.errors import ImageError
from toolkit.images import FORMATS, open_image, resize

# Camera frames: 4:3, 3:2, 16:9, 1:1 and their portrait turns; the widest common video mode is 32:9 (3.6:1,
# dual-lens panoramas). 4:1 keeps all of them and refuses slivers (1 x 25,000,000 is 25,000,000:1).
MAX_ASPECT = 4.0
# The largest side of any still camera a household has: 8K video is 7680 wide, a 48 MP phone sensor 8000.
MAX_SIDE = 8192
# A chain that detects a hand or a face keeps at least a 1080p frame: the landmark crop comes from it.
FULL_FRAME_SIDE = 1920


def frame_shape_problem(width: int, height: int) -> str | None:
    """Why an image of this size is no camera frame (a side or the aspect ratio), or None."""
    if max(width, height) > MAX_SIDE:
        return f"{width}x{height} pixels: a side exceeds {MAX_SIDE}, larger than any camera frame"
    if min(width, height) == 0 or max(width, height) / min(width, height) > MAX_ASPECT:
        return f"{width}x{height} pixels: an aspect ratio beyond {MAX_ASPECT:g}:1, which no camera frame has"
    return None


class DecodeBudget:
    """Decoded pixels in flight, across all requests, at most ``pixels``: a request waits for room.

    A request larger than the whole budget (it cannot be: ``--max-pixels`` refuses it first) waits for an
    empty budget and then runs alone.
    """

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, pixels: int) -> int:
        pixels = min(pixels, self.pixels)
        with self._cond:
            self._cond.wait_for(lambda: self.used + pixels <= self.pixels)
            self.used += pixels
        return pixels

    def release(self, pixels: int) -> None:
        with self._cond:
            self.used -= pixels
            self._cond.notify_all()


def _full_frame(manifest) -> bool:
    """A detector finds the face or hand in the frame (a landmark chain, or a face crop before the model); a
    ``features`` chain without a detector takes the resized image, as a one-file export does."""
    return bool(manifest.detector) or manifest.pipeline not in ("", "features")


def working_size(predictor, width: int, height: int) -> tuple[int, int]:
    """(width, height) a decode must keep at least: a full frame for a detector chain, else twice the input
    (the final resize still averages several pixels into one, as from a full decode)."""
    manifest = predictor.manifest
    if _full_frame(manifest):
        scale = min(1.0, FULL_FRAME_SIDE / max(width, height))
        return max(1, round(width * scale)), max(1, round(height * scale))
    h, w = predictor.size
    return 2 * w, 2 * h


def decode_upload(data: bytes, predictor, budget: DecodeBudget, name: str = "upload") -> np.ndarray:
    """One uploaded image as the predictor's input array (its input size, or a full frame for a chain).

    Raises:
        ImageError: not an image, too many pixels, or a shape no camera frame has.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except Exception:  # not an image: open_image below says so in its usual words
        header = None
    target, pixels = None, 1
    if header is not None:
        width, height = header.size
        problem = frame_shape_problem(width, height)
        if problem is not None:
            raise ImageError(f"{name}: {problem}; send a camera frame or a photo")
        target = working_size(predictor, width, height)
        if header.format == "JPEG":
            try:
                header.draft("RGB", target)  # no decoding: the size a decode at that scale will have
            except Exception:  # an odd JPEG mode: decoded at full size (the budget still counts it)
                pass
        pixels = max(1, header.size[0] * header.size[1])
    held = budget.acquire(pixels)
    try:
        img = open_image(data, max_pixels=predictor.max_pixels, name=name, draft=target)
        if _full_frame(predictor.manifest):
            if max(img.size) > FULL_FRAME_SIDE:  # a PNG has no draft: reduce it to the frame after decoding
                img.thumbnail((FULL_FRAME_SIDE, FULL_FRAME_SIDE), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
        return np.asarray(resize(img, predictor.size), dtype=np.uint8)
    finally:
        budget.release(held)

