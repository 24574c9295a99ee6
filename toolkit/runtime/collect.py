"""``toolkit door collect``: take labelled photos with the door camera to build a training set.

Photos land in ``OUT/LABEL/`` (the image-folder layout the training commands read), written atomically
so a training run started meanwhile never reads half a JPEG. By default the whole frame is saved: what the door
sees, and what ``toolkit face-model`` (``pipelines/door.toml``) trains on best. With a detector, the face is saved
with room around it (:data:`ROOM`): the face mesh looks at a square 1.5 times the face box, turned with the face,
so a tight crop would cut its view; ``?crop=face`` still cuts the tight crop an expression-only model trains on.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from toolkit.errors import ToolkitError
from toolkit.runtime.camera import CameraError, FrameSource, make_cropper, open_source
from toolkit.runtime.core.config import CollectConfig

log = logging.getLogger("toolkit.runtime")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ROOM = 0.5  # of the face box added on each side: a square twice the face, holding the face mesh's 1.5x region


def collect(
    config: CollectConfig,
    source: FrameSource | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_save: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Save one photo every ``config.every`` seconds until ``count`` photos or the source ends.

    Args:
        config: camera, label, output folder, pace, count, face crop.
        source: an already-built frame source (tests); default: the one ``config.camera`` names.
        sleep: injectable pause between photos.
        on_save: called with each saved path (the CLI prints it).

    Returns:
        The saved files.

    Raises:
        ToolkitError: a bad label or output folder, or a camera that fails.
    """
    if not _LABEL.match(config.label):
        raise ToolkitError(f"--label {config.label!r}: use letters, digits, '_', '-' or '.', e.g. 'smile'")
    folder = Path(config.out) / config.label
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolkitError(f"--out {config.out}: cannot create {folder} ({exc.strerror})") from exc
    cropper = make_cropper(config.face)
    source = source or open_source(config.camera)
    saved: list[Path] = []
    try:
        source.open()
        while not config.count or len(saved) < config.count:
            frame = source.read()
            if frame is None:
                break
            crop = room_crop(cropper, frame) if cropper else frame
            if crop is None:
                continue  # no face in view: nothing worth labelling
            path = _next_name(folder, config.label)
            tmp = path.with_suffix(".tmp")
            Image.fromarray(crop).save(tmp, format="JPEG", quality=95)
            os.replace(tmp, path)
            saved.append(path)
            if on_save:
                on_save(path)
            if config.every > 0:
                sleep(config.every)
    except CameraError as exc:
        raise ToolkitError(f"--camera {config.camera}: {exc}; {len(saved)} photos saved in {folder}") from exc
    finally:
        source.close()
    return saved


def room_crop(cropper, frame):
    """The square around the largest face with :data:`ROOM` on each side (shifted, not cut, at the frame's
    edges), or None when there is no face."""
    from toolkit.inference.detect import square_crop_box

    if hasattr(cropper, "detect"):  # BlazeFace: (x0, y0, x1, y1) boxes
        found = cropper.detect(frame)
        if not found:
            return None
        box = max(found, key=lambda d: d.area).box
    else:  # OpenCV's cascade: (x, y, w, h)
        got = cropper.box(frame)
        if got is None:
            return None
        x, y, w, h = got
        box = (x, y, x + w, y + h)
    x0, y0, x1, y1 = square_crop_box(box, frame.shape[:2], ROOM)
    return frame[y0:y1, x0:x1]


def _next_name(folder: Path, label: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(10_000):
        path = folder / f"{label}-{stamp}-{i:04d}.jpg"
        if not path.exists():
            return path
    raise ToolkitError(f"{folder}: too many photos this second")
