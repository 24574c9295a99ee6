"""Image folders: ``root/<class>/**/*.jpg`` with one sub-folder per class (sorted names = label order).

Every file is read once: its bytes are hashed (duplicates, label conflicts, streamed fingerprints) and
decoded with :func:`toolkit.images.decode_image`, the decode the door runtime uses. Decoding runs in a
thread pool; Pillow and hashlib release the GIL, so threads scale without pickling pixels.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.data.report import DataReport, find_duplicates
from toolkit.data.split import Split, take_indices
from toolkit.errors import ImageError, ToolkitError, printable
from toolkit.images import DECODE_WORKERS, decode_image, is_image_file, open_image


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def scan_folder(root: Path) -> tuple[tuple[str, ...], list[tuple[Path, int]], list[str]]:
    """List the class folders and their image files.

    Returns:
        (labels, [(path, label index)], ignored non-image files as paths relative to ``root``).

    Raises:
        ToolkitError: no class folders, a single class, or a class folder without image files.
    """
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not _hidden(Path(p.name)))
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if not classes:
        hint = f" ({len(loose)} files lie directly in it)" if loose else ""
        raise ToolkitError(
            f"{printable(root)}: no class sub-folders{hint}; put the images in one folder per class, e.g. "
            f"{printable(root)}/smile/*.jpg and {printable(root)}/no_smile/*.jpg"
        )
    for name in classes:
        if printable(name) != name:  # not UTF-8 (surrogate-escaped bytes), or control characters
            raise ToolkitError(
                f"{printable(root / name)}: class folder name is not valid UTF-8 or has control characters; rename "
                "it (class names become the labels in manifests and API answers)"
            )
    if len(classes) < 2:
        raise ToolkitError(
            f"{printable(root)}: only one class folder ({classes[0]}); a classifier needs at least two, "
            "add a sub-folder per class"
        )
    files: list[tuple[Path, int]] = []
    ignored = [printable(n) for n in loose]
    for index, name in enumerate(classes):
        folder = root / name
        found = []
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(root)
            if _hidden(rel.relative_to(name)) or not path.is_file():
                continue
            if is_image_file(path):
                found.append((path, index))
            else:
                ignored.append(printable(rel))
        if not found:
            raise ToolkitError(
                f"{printable(folder)}: class folder has no images (.jpg .jpeg .png .bmp .webp); add images or remove it"
            )
        files.extend(found)
    return tuple(classes), files, ignored


class NoFace(Exception):
    """The face crop found no face in a photo (it is left out and listed in the report)."""


def _read(path: Path, name: str, size: tuple[int, int], out: np.ndarray | None, crop=None):
    """Hash, probe and decode one file into ``out`` (when given); returns (digest, (w, h), mode, error).

    ``crop``: a face detector; the photo is cut to its face before the resize, as at the door. No face
    gives the error :class:`NoFace`.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, None, None, f"cannot read file ({exc.strerror or exc})"
    digest = hashlib.sha256(data).digest()
    try:
        if crop is None:
            pixels = decode_image(data, size, name=name)
        else:
            face = crop(np.asarray(open_image(data, name=name)))
            if face is None:
                return digest, None, None, NoFace()
            pixels = decode_image(np.ascontiguousarray(face), size, name=name)
    except ImageError as exc:
        message = str(exc)
        return digest, None, None, message[len(name) + 2 :] if message.startswith(name) else message
    # Header only (the pixels above came from decode_image): stored size and mode, for the report.
    with Image.open(io.BytesIO(data)) as img:
        stored, mode = img.size, img.mode
    if out is not None:
        out[...] = pixels
    return digest, stored, mode, None


def load_folder(
    root: Path,
    spec: str,
    size: tuple[int, int],
    *,
    n: int | None,
    seed: int,
    strict: bool,
    max_in_memory_bytes: int,
    crop=None,
) -> tuple[Split, DataReport]:
    """Load an image folder as one split named "all" plus its report.

    Args:
        root: the folder holding one sub-folder per class.
        spec: the spec text, for messages and the report.
        size: (height, width) to resize every image to.
        n: keep a stratified subsample of this many files (chosen before reading, so it is fast).
        seed: seed of that subsample.
        strict: unreadable files raise instead of being skipped with a warning.
        max_in_memory_bytes: above this many bytes of pixels the split streams from disk.
        crop: a face detector (``?crop=face``); photos where it finds no face are left out and listed.

    Raises:
        ToolkitError: see :func:`scan_folder`; strict mode with unreadable files; a class left with no
            readable image.
    """
    labels, files, ignored = scan_folder(root)
    if n is not None:
        if n > len(files):
            raise ToolkitError(f"data spec {spec!r}: n={n} but {root} holds only {len(files)} images")
        files = [files[i] for i in take_indices(np.array([y for _, y in files]), n, seed)]
    names = [printable(p.relative_to(root)) for p, _ in files]  # for messages and the report only
    streamed = len(files) * size[0] * size[1] * 3 > max_in_memory_bytes
    if streamed and crop is not None:  # a streamed split decodes inside tf.data, where no detector runs
        raise ToolkitError(f"data spec {spec!r}: crop=face keeps the crops in memory, and {len(files)} images of "
                           f"{size[1]}x{size[0]} exceed {max_in_memory_bytes:,} bytes; use ?n=N for fewer")
    # Streamed splits still decode every file once here: a corrupt file must surface now, as a
    # warning, not as a crash in the middle of an epoch.
    # Decode straight into one preallocated array: no second copy of the pixels.
    x = None if streamed else np.empty((len(files), *size, 3), dtype=np.uint8)

    def work(i: int):
        return _read(files[i][0], names[i], size, None if x is None else x[i], crop)

    with ThreadPoolExecutor(DECODE_WORKERS) as pool:
        results = list(pool.map(work, range(len(files))))
    report = DataReport(spec=spec, source="folder", streamed=streamed, ignored=ignored)
    keep = [i for i, r in enumerate(results) if r[3] is None]
    report.no_face = [names[i] for i, r in enumerate(results) if isinstance(r[3], NoFace)]
    report.skipped = [(names[i], r[3]) for i, r in enumerate(results)
                      if r[3] is not None and not isinstance(r[3], NoFace)]
    if report.skipped and strict:
        path, reason = report.skipped[0]
        more = f" (and {len(report.skipped) - 1} more)" if len(report.skipped) > 1 else ""
        raise ToolkitError(f"{printable(root)}/{path}: {reason}{more}; fix or delete it, or load without strict mode")
    y = np.array([files[i][1] for i in keep], dtype=np.int64)
    for index, name in enumerate(labels):
        if not np.any(y == index):
            why = " with a face" if crop is not None else ""
            raise ToolkitError(
                f"{printable(root / name)}: no readable image{why} in this class folder; fix or remove it"
            )
    digests = [results[i][0] for i in keep]
    kept_names = [names[i] for i in keep]
    report.class_counts = {name: int(np.sum(y == i)) for i, name in enumerate(labels)}
    report.image_sizes = Counter(results[i][1] for i in keep)
    report.image_modes = Counter(results[i][2] for i in keep)
    report.duplicates, report.conflicts, groups = find_duplicates(kept_names, digests, y.tolist())
    if streamed:
        split = Split(
            "all",
            labels,
            y,
            size,
            paths=tuple(str(files[i][0]) for i in keep),
            digests=tuple(digests),
            groups=np.array(groups),
        )
    else:
        if len(keep) < len(files):
            x = x[keep]
        split = Split("all", labels, y, size, x=x, groups=np.array(groups), names=tuple(kept_names))
    return split, report
