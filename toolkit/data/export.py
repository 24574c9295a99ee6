"""Write data out: a dataset as an image folder (atomically), and a PNG grid of samples per class."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from toolkit.errors import ToolkitError

GRID_COLUMNS = 8
LABEL_WIDTH = 96


def write_image_folder(spec: str, out: Path, size: int = 64) -> int:
    """Load ``spec`` and write it to ``out/<label>/<index>.png``; returns the number of images.

    The images go to a temporary sibling folder that is renamed into place at the end, so an
    interrupted run leaves nothing half-written.

    Raises:
        ToolkitError: ``out`` exists and is not an empty folder, or the spec cannot be loaded.
    """
    from toolkit.data import load_data

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ToolkitError(f"{out}: already exists and is not empty; choose a new --out folder or delete it")
    ds = load_data(spec, size)
    x, y = ds.all().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        width = len(str(max(len(y) - 1, 0)))
        for name in ds.labels:
            (tmp / name).mkdir()
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            Image.fromarray(image).save(tmp / ds.labels[label] / f"{i:0{width}d}.png")
        if out.exists():
            out.rmdir()  # checked empty above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(y)


def grid_image(ds, columns: int = GRID_COLUMNS, seed: int = 0) -> Image.Image:
    """One row per class: the class name, its count and up to ``columns`` random samples."""
    pool = ds.all()
    h, w = pool.image_size
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(pool.y == c))[:columns] for c in range(len(ds.labels))]
    x, _ = pool.subset(np.concatenate(picks)).numpy()
    canvas = Image.new("RGB", (LABEL_WIDTH + columns * (w + 2), len(ds.labels) * (h + 2)), "white")
    draw = ImageDraw.Draw(canvas)
    k = 0
    for row, (name, idx) in enumerate(zip(ds.labels, picks, strict=True)):
        top = row * (h + 2)
        draw.text((4, top + h // 2 - 10), f"{name}\n({int(np.sum(pool.y == row))})", fill="black")
        for col in range(len(idx)):
            canvas.paste(Image.fromarray(x[k]), (LABEL_WIDTH + col * (w + 2), top))
            k += 1
    return canvas


def write_grid(ds, path: Path) -> None:
    """Write :func:`grid_image` of ``ds`` to ``path`` as PNG, atomically."""
    path = Path(path)
    try:  # like every --out: its folder is made (the README's tour writes runs/happy.png in a fresh checkout)
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolkitError(f"--grid {path}: cannot create folder {path.parent} ({exc.strerror})") from exc
    img = grid_image(ds)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
