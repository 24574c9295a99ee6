"""The labelled folder the page files snapshots into (``labelled/<label>/``): counts, listing and deletion.

These are photos of the household: the page and ``toolkit door forget`` delete them. Names are checked to be
one plain file inside one label folder; symlinks are neither listed nor followed.
"""

from __future__ import annotations

import re
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.images import IMAGE_SUFFIXES

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")


def _photos(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and not f.is_symlink() and not f.name.startswith(".")
                  and f.suffix.lower() in IMAGE_SUFFIXES)


def summary(root: Path | None, labels: tuple[str, ...], limit: int = 200) -> dict:
    """{label: {"count": n, "photos": [newest names...]}} for each of the model's labels (0 when absent)."""
    out = {}
    for label in labels:
        folder = Path(root) / label if root is not None else None
        photos = _photos(folder) if folder is not None and folder.is_dir() and not folder.is_symlink() else []
        photos.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        out[label] = {"count": len(photos), "photos": [p.name for p in photos[:limit]]}
    return out


def photo_path(root: Path, name: str) -> Path:
    """The file ``root/LABEL/FILE`` for ``name`` = "LABEL/FILE", checked.

    Raises:
        ToolkitError: not LABEL/FILE of plain names, or no such regular file.
    """
    parts = str(name).split("/")
    if len(parts) != 2 or not all(_NAME.match(p) for p in parts):
        raise ToolkitError(f"{name!r}: name a labelled photo as LABEL/FILE (e.g. smile/snap-1.jpg)")
    path = Path(root) / parts[0] / parts[1]
    if path.is_symlink() or (Path(root) / parts[0]).is_symlink() or not path.is_file():
        raise ToolkitError(f"{path}: no such labelled photo")
    return path


def delete_photo(root: Path, name: str) -> Path:
    """Delete one labelled photo; returns its path.

    Raises:
        ToolkitError: a bad name, no such photo, or the folder is not writable.
    """
    path = photo_path(root, name)
    try:
        path.unlink()
    except OSError as exc:
        raise ToolkitError(f"{path}: cannot delete it ({exc.strerror}); run as the door's user") from None
    return path
