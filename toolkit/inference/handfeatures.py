"""The numbers a hand-sign head reads, computed from 21 hand landmarks: one function for training, export and door.

Two blocks, both relative to the wrist and divided by the wrist-to-middle-knuckle distance in the image plane,
with left hands mirrored (x -> -x) so either hand makes the same sign:

- ``points`` (63): the 21 (x, y, z) points. By default the hand is first turned in the image plane so the
  wrist -> middle-knuckle axis points up: the same sign held at another angle gives the same numbers. With
  ``orientation = "kept"`` (``--keep-orientation``) the points stay as the camera saw them, for sign sets where
  the angle is the meaning (thumbs up against thumbs down: the same hand shape, turned by 180 degrees).
- ``angles`` (30): the cosine of the bend at each of the 3 inner joints of each finger (15), the distances
  between the 5 fingertips (10) and from each fingertip to the wrist (5), all in 3-D. These do not change
  when the hand turns in the plane or is mirrored, whatever the orientation setting.

A head reads ``points`` or ``points+angles`` (the cross-validated head chooses; both are offered). Training
computes the full vector once; the ``points`` set is its first 63 columns, so a head fitted on either set reads
exactly what :func:`hand_vector` gives the door for that set. A manifest records the set, the orientation and
:data:`FEATURE_VERSION` (:meth:`FeatureSpec.record`); the door and the export refuse
a head recorded with another version (:meth:`FeatureSpec.from_record`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.errors import ToolkitError

# Bump when HandTracker.track() (toolkit.inference.hands) or these features change their numbers: the feature
# cache key includes it, and a run or manifest whose head was fitted on another version is refused.
# 2: the crop's bilinear weights summed in float32. 3: turned upright by default, the angles/distances block.
# 4: the crops by OpenCV (or Pillow), as MediaPipe makes them (the frame budget).
FEATURE_VERSION = "hands-4"
NUM_POINTS = 21
WRIST, MIDDLE_MCP = 0, 9
# MediaPipe's landmark order: the wrist, then 4 points per finger from the base to the tip.
FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
TIPS = tuple(f[-1] for f in FINGERS)
POINTS_DIM = 3 * NUM_POINTS
ANGLES_DIM = 3 * len(FINGERS) + len(TIPS) * (len(TIPS) - 1) // 2 + len(TIPS)  # 15 cosines + 10 + 5 distances
SETS = {"points": POINTS_DIM, "points+angles": POINTS_DIM + ANGLES_DIM}  # the head reads the first N columns
ORIENTATIONS = ("upright", "kept")  # upright: turned so the wrist -> middle knuckle points up; kept: as seen
FULL = "points+angles"


@dataclass(frozen=True)
class FeatureSpec:
    """Which hand features a head reads: the set (``points`` or ``points+angles``) and the orientation."""

    set: str = "points"
    orientation: str = "upright"

    def __post_init__(self):
        if self.set not in SETS:
            raise ToolkitError(f"hand features: set must be one of {', '.join(SETS)}, got {self.set!r}")
        if self.orientation not in ORIENTATIONS:
            raise ToolkitError(f"hand features: orientation must be one of {', '.join(ORIENTATIONS)}, "
                               f"got {self.orientation!r}")

    @property
    def dim(self) -> int:
        return SETS[self.set]

    def record(self) -> dict:
        """What a run's config and an export's manifest say about the head's input (``hands.features``)."""
        return {"version": FEATURE_VERSION, "set": self.set, "orientation": self.orientation, "dim": self.dim}

    @classmethod
    def from_record(cls, hands: dict, where: str) -> FeatureSpec:
        """The spec a run or manifest records, refused unless it was computed by this toolkit's feature version.

        Raises:
            ToolkitError: another (or no) feature version: one line naming ``where`` and the fix.
        """
        rec = hands.get("features") if isinstance(hands, dict) else None
        got = rec.get("version") if isinstance(rec, dict) else (hands or {}).get("feature_version")
        if not isinstance(rec, dict) or got != FEATURE_VERSION:
            raise ToolkitError(f"{where}: the head reads hand features {got or 'of an older toolkit'}, this toolkit "
                               f"computes {FEATURE_VERSION}; run 'toolkit finetune hands' and 'toolkit export' again")
        try:
            spec = cls(str(rec.get("set", "points")), str(rec.get("orientation", "upright")))
        except ToolkitError as exc:
            raise ToolkitError(f"{where}: field 'hands.features': {exc}") from None
        if rec.get("dim", spec.dim) != spec.dim:
            raise ToolkitError(f"{where}: field 'hands.features.dim' is {rec.get('dim')}, set {spec.set!r} has "
                               f"{spec.dim}; re-run 'toolkit export'")
        return spec


def hand_vectors(points: np.ndarray, left: np.ndarray, spec: FeatureSpec = FeatureSpec()) -> np.ndarray:
    """(N, spec.dim) float32 features of N hands: ``points`` (N, 21, 3) in image pixels, ``left`` (N,) bool."""
    pts = np.asarray(points, np.float64)[:, :, :3]
    pts = pts - pts[:, WRIST:WRIST + 1]
    scale = np.hypot(pts[:, MIDDLE_MCP, 0], pts[:, MIDDLE_MCP, 1])
    pts = pts / np.where(scale > 1e-6, scale, 1.0)[:, None, None]  # a degenerate hand: no division by zero
    pts[np.asarray(left, bool), :, 0] *= -1
    if spec.orientation == "upright":
        pts = _upright(pts)
    out = pts.reshape(len(pts), -1)
    if spec.set == "points+angles":
        out = np.concatenate([out, _angles(pts)], axis=1)
    return out.astype(np.float32)


def hand_vector(points: np.ndarray, left: bool, spec: FeatureSpec = FeatureSpec()) -> np.ndarray:
    """(spec.dim,) float32 features of one hand: ``points`` (21, 3) image pixels, ``left`` its handedness."""
    return hand_vectors(np.asarray(points)[None], np.array([bool(left)]), spec)[0]


def _upright(pts: np.ndarray) -> np.ndarray:
    """Each hand turned in the image plane (about the wrist) so its middle knuckle lies straight above it.

    Mirroring then turning equals turning then mirroring (both leave the axis pointing up), so the result
    does not depend on which was done first.
    """
    v = pts[:, MIDDLE_MCP, :2]
    n = np.hypot(v[:, 0], v[:, 1])
    ok = n > 1e-6
    c = np.where(ok, v[:, 0] / np.where(ok, n, 1), 0.0)
    s = np.where(ok, v[:, 1] / np.where(ok, n, 1), -1.0)  # no axis: no turn (the identity below)
    # The rotation taking the unit axis (c, s) to (0, -1), "up" with image y growing downwards.
    x, y = pts[..., 0], pts[..., 1]
    out = pts.copy()
    out[..., 0] = -s[:, None] * x + c[:, None] * y
    out[..., 1] = -c[:, None] * x - s[:, None] * y
    return out


def _angles(pts: np.ndarray) -> np.ndarray:
    """(N, 30): joint cosines along each finger, fingertip-to-fingertip and fingertip-to-wrist distances (3-D)."""
    cols = []
    for finger in FINGERS:
        chain = pts[:, (WRIST, *finger)]
        seg = np.diff(chain, axis=1)  # 4 bones, wrist to tip
        norm = np.linalg.norm(seg, axis=2)
        dot = np.sum(seg[:, :-1] * seg[:, 1:], axis=2)
        den = norm[:, :-1] * norm[:, 1:]
        cols.append(np.where(den > 1e-12, dot / np.where(den > 1e-12, den, 1.0), 0.0))  # a zero bone: 0
    tips = pts[:, TIPS]
    i, j = np.triu_indices(len(TIPS), k=1)
    cols.append(np.linalg.norm(tips[:, i] - tips[:, j], axis=2))
    cols.append(np.linalg.norm(tips - pts[:, WRIST:WRIST + 1], axis=2))
    return np.concatenate(cols, axis=1)
