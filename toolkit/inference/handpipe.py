"""The hand-sign pipeline, shared by training and the door: image -> (upscale) -> palm -> landmarks -> features.

Training (:mod:`toolkit.train.hands`) and the door's :class:`~toolkit.inference.predictor.Predictor` both go
through :func:`hand_features` with the head's :class:`~toolkit.inference.handfeatures.FeatureSpec` (recorded
in the run and the manifest, refused when computed by another feature version), so the head sees the same
numbers in both places. An image where the palm
detector finds no hand has no features: the door answers :data:`NO_HAND` (never a guess), and every test
figure counts it as a wrong answer.

An export folder of this pipeline holds, besides ``manifest.json`` (``pipeline: "hands"``)::

    palm ONNX      image -> palm boxes            } files and sha256 in manifest["hands"]["files"]
    landmark ONNX  rotated hand crop -> 21 points }
    head ONNX      63 or 93 features -> class probabilities (the manifest's ``serve`` entry; hands["features"]
                   says which)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.inference.manifest import sha256_file

PIPELINE = "hands"  # manifest["pipeline"] of a hand-sign export
NO_HAND = "no_hand"  # the explicit answer when the palm detector finds no hand
# Small photos are upscaled so their shorter side is at least this before tracking: the palm detector finds
# hands in 119 of 120 64x64 photos upscaled to 256, far fewer at 64.
MIN_SIDE = 256
FEATURE_INPUT = "features"  # the head ONNX file's input name
# A hand that fills the photo is too big for the palm detector (sign_digits' close-ups: no hand in 191 of 1,237
# photos of signs 0-5). When none is found, the photo is tried again inside a black border of this fraction of
# its size on each side: 181 of those 191 are then found, and none of 100 found ones was lost with the border.
ZOOM_OUT = 0.5
# A hand held far from upright can be missed by the palm detector (sign_digits test photos turned within +-45
# degrees: 6 of 186 lost, 1 unturned). When neither the plain nor the zoomed-out look finds one, the detector's
# view is turned by each of these, plain then zoomed out: that finds 3 of those 6 (and the 1), where +-60 found
# none that +-30 did not (benchmarks/hands.py, docs/hands.md). Hands found before are found as before.
TURNS = (30.0, -30.0)


def turns_of(record: dict, where: str) -> tuple[float, ...]:
    """A run's or manifest's hand record's ``turns`` (degrees; none in records from before the turned looks).

    Raises:
        ToolkitError: ``turns`` is not a list of numbers.
    """
    turns = record.get("turns", [])
    if not isinstance(turns, list) or not all(isinstance(d, int | float) and not isinstance(d, bool) for d in turns):
        raise ToolkitError(f"{where}: field 'hands.turns' must be a list of degrees (e.g. [30, -30]), got "
                           f"{turns!r}; re-run 'toolkit export'")
    return tuple(float(d) for d in turns)


def upscale(image: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """``image`` (HxWx3 uint8) with its shorter side raised to ``min_side`` (bilinear, aspect kept); larger as is."""
    h, w = image.shape[:2]
    if min_side <= 0 or min(h, w) >= min_side:
        return image
    from toolkit.images import resize

    scale = min_side / min(h, w)
    size = (max(min_side, round(h * scale)), max(min_side, round(w * scale)))
    from PIL import Image

    return np.asarray(resize(Image.fromarray(image), size), dtype=np.uint8)


def open_tracker(palm: Path, landmark: Path, threads: int = 1, min_score: float = 0.5, twins: dict | None = None):
    """The hand tracker over two ONNX files and their ``.tflite`` twins if any ({role: path}; see
    :mod:`toolkit.inference.litert`); a function, so tests can put a fake in its place."""
    from toolkit.inference.hands import HandTracker

    return HandTracker(palm, landmark, threads=threads, min_score=min_score, twins=twins)


def hand_features(tracker, image: np.ndarray, min_side: int = MIN_SIDE, zoom_out: float = ZOOM_OUT, spec=None,
                  turns: tuple = TURNS):  # fmt: skip
    """(features (spec.dim,) float32 or None when no hand is found, the Hand or None) for one HxWx3 RGB image.

    Small images are upscaled to ``min_side``; when no hand is found, the image is tried once more inside a
    black border of ``zoom_out`` of its size on each side (the Hand's points stay in the image's pixels), then
    with the palm detector's view turned by each of ``turns`` (degrees, :data:`TURNS`) in turn.
    ``spec``: a :class:`~toolkit.inference.handfeatures.FeatureSpec` (default: upright points).
    """
    import dataclasses

    from toolkit.inference.hands import features, turned_views

    image = upscale(np.asarray(image, dtype=np.uint8), min_side)
    hand = tracker.track(image)
    if hand is None and zoom_out > 0:
        h, w = image.shape[:2]
        by, bx = round(h * zoom_out), round(w * zoom_out)
        framed = np.zeros((h + 2 * by, w + 2 * bx, 3), np.uint8)
        framed[by:by + h, bx:bx + w] = image
        hand = tracker.track(framed)
        if hand is not None and hasattr(hand, "points"):
            hand = dataclasses.replace(hand, points=np.asarray(hand.points, np.float32) - np.array(
                [bx, by, 0], np.float32))
    for zoom, degrees in turned_views(zoom_out, turns) if hand is None else ():
        hand = tracker.track(image, zoom=zoom, degrees=degrees)
        if hand is not None:
            break
    if hand is None:
        return None, None
    return np.asarray(features(hand, spec), dtype=np.float32).reshape(-1), hand


def stream_features(stream, image: np.ndarray, min_side: int = MIN_SIDE, spec=None):
    """:func:`hand_features` for one frame of a camera stream: the hand followed from the last frame.

    ``stream`` is a :class:`~toolkit.inference.handtrack.HandStream` (its rule for losing and re-finding a hand
    is in that module); the features are computed as for a photo.
    """
    from toolkit.inference.hands import features

    hand = stream.track(upscale(np.asarray(image, dtype=np.uint8), min_side))
    if hand is None:
        return None, None
    return np.asarray(features(hand, spec), dtype=np.float32).reshape(-1), hand


def hand_record(hand) -> dict | None:
    """What an answer says about the hand it saw (None: no hand)."""
    if hand is None:
        return None
    return {"score": round(float(hand.score), 4), "handedness": hand.handedness}


class HandPipeline:
    """An export folder's palm and landmark files, checked by sha256 against its manifest, as one tracker.

    Raises:
        ToolkitError: a file missing, changed after export, a manifest without a ``hands`` record, or a head
            fitted on features of another feature version.
    """

    def __init__(self, folder: Path, record: dict, threads: int = 1) -> None:
        from toolkit.inference.handfeatures import FeatureSpec

        where = Path(folder) / "manifest.json"
        files = record.get("files") if isinstance(record, dict) else None
        if not isinstance(files, dict) or not {"palm", "landmark"} <= set(files):
            raise ToolkitError(f"{where}: field 'hands.files' must name the 'palm' and 'landmark' ONNX files; "
                               "re-run 'toolkit export'")
        self.spec = FeatureSpec.from_record(record, str(where))  # a head is only as good as the numbers it reads
        self.feature_version = record["features"]["version"]
        sums = record.get("sha256", {})
        paths = {}
        for role in ("palm", "landmark"):
            path = Path(folder) / files[role]
            if not path.is_file():
                raise ToolkitError(f"{path}: the hand {role} model listed in the manifest is missing; "
                                   "re-run 'toolkit export'")
            expected = sums.get(files[role]) or sums.get(role)
            if expected is not None and sha256_file(path) != expected:
                raise ToolkitError(f"{path}: sha256 does not match hands.sha256 in {where}; the file changed "
                                   "after export, re-run 'toolkit export'")
            paths[role] = path
        self.min_side = int(record.get("min_side", MIN_SIDE))
        self.zoom_out = float(record.get("zoom_out", 0.0))  # exports from before the second look had none
        self.turns = turns_of(record, str(where))  # nor turned looks, before those
        from toolkit.inference.litert import export_twins

        twins = export_twins(folder, record, where, "hands")
        self.tracker = open_tracker(paths["palm"], paths["landmark"], threads, float(record.get("min_score", 0.5)),
                                    twins=twins or None)

    def features(self, image: np.ndarray, stream=None):
        """(features or None, Hand or None) for one RGB image of any size; a frame of ``stream`` if given."""
        if stream is not None:
            return stream_features(stream, image, self.min_side, self.spec)
        return hand_features(self.tracker, image, self.min_side, self.zoom_out, self.spec, turns=self.turns)

    def runtimes(self) -> dict:
        """{model: the runtime serving it} (:mod:`toolkit.inference.litert`)."""
        tracker = self.tracker
        sessions = {"palm": getattr(tracker, "palm", None), "hand landmarks": getattr(tracker, "landmark", None)}
        return {k: s.runtime for k, s in sessions.items() if hasattr(s, "runtime")}  # a test's fake tracker: none

    def stream(self):
        """A new camera stream's state (:class:`~toolkit.inference.handtrack.HandStream`) over this tracker."""
        from toolkit.inference.handtrack import HandStream

        return HandStream(self.tracker, self.zoom_out, self.turns)


def with_no_hand(probs: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Class probabilities of the found images (F, K) -> (N, K + 1) for all N images, the last column "no hand".

    An image without a hand gets probability 1 on "no hand", a class no image belongs to: every figure computed
    from these rows counts it as a wrong answer.
    """
    found = np.asarray(found, bool)
    probs = np.asarray(probs, np.float64).reshape(int(found.sum()), -1)
    out = np.zeros((len(found), probs.shape[1] + 1))
    out[found, :-1] = probs
    out[~found, -1] = 1.0
    return out
