"""What the zoomed-out second palm pass (toolkit.inference.handpipe.ZOOM_OUT) finds that the plain pass misses.

    python -m benchmarks.zoom_out [--n 120] [--seed 0]

Two kinds of input, each hand judged as a photo (HandTracker.track, then the zoomed-out pass when it finds none):

- close-ups: sign_digits photos as training reads them (100x100 -> 256x256), what the pass was added for;
- door-like frames: the same photos composed into 640x480 frames of a wall, at the size a hand has 0.5-3 m from
  a camera with a 60 degree field of view (a ~19 cm hand is 210 px wide at 0.5 m, 35 px at 3 m; the photo's
  hand fills ~70 % of it), at random places.

Prints, per kind, how many hands the plain pass finds, how many more the zoomed-out pass adds, and the
distances of the door-like frames where it helped.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from benchmarks.common import CHECKOUT
from benchmarks.vs_mediapipe import compose, wall

DATA = CHECKOUT.parent / "shared" / "datasets" / "sign_digits"
HFOV = math.radians(60)
HAND_M = 0.19  # wrist to fingertip
FILL = 0.7  # share of a sign_digits photo the hand spans


def photo_side(distance_m: float, width_px: int = 640) -> int:
    """The side in pixels of a sign_digits photo whose hand is HAND_M wide at ``distance_m``."""
    seen = 2 * distance_m * math.tan(HFOV / 2)
    return max(16, round(HAND_M / seen * width_px / FILL))


def look(tracker, image: np.ndarray) -> tuple[bool, bool]:
    """(found by the plain pass, found by the zoomed-out pass when the plain one found nothing)."""
    from toolkit.inference.handpipe import ZOOM_OUT

    if tracker.track(image) is not None:
        return True, False
    h, w = image.shape[:2]
    by, bx = round(h * ZOOM_OUT), round(w * ZOOM_OUT)
    framed = np.zeros((h + 2 * by, w + 2 * bx, 3), np.uint8)
    framed[by : by + h, bx : bx + w] = image
    return False, tracker.track(framed) is not None


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from toolkit.inference.handpipe import MIN_SIDE, open_tracker, upscale
    from toolkit.models.hands import ensure_hand_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=120, help="photos per kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: sign_digits is needed (see /work/shared/datasets)")
    rng = np.random.default_rng(args.seed)
    photos = sorted(DATA.glob("*/*.JPG"))
    photos = [photos[i] for i in rng.choice(len(photos), size=min(args.n, len(photos)), replace=False)]
    models = ensure_hand_models()
    tracker = open_tracker(models.palm, models.landmark)
    bg = wall(rng)
    close = np.zeros(2, int)
    door = np.zeros(2, int)
    helped = []
    for path in photos:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB").resize((100, 100), Image.Resampling.BILINEAR))
        close += look(tracker, upscale(rgb, MIN_SIDE))
        distance = float(rng.uniform(0.5, 3.0))
        side = photo_side(distance)
        hand = np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.BILINEAR))
        x, y = rng.uniform(0, 640 - side), rng.uniform(0, 480 - side)
        found = look(tracker, compose(bg, hand, x, y))
        door += found
        if found[1]:
            helped.append(round(distance, 2))
    n = len(photos)
    print(f"close-ups (sign_digits 100x100 -> 256x256): plain pass finds {close[0]}/{n}, the zoomed-out pass "
          f"{close[1]} more ({(close[0] + close[1]) / n:.1%} in all)")
    print(f"door-like 640x480 frames (hand 0.5-3 m, photo side {photo_side(3.0)}-{photo_side(0.5)} px): plain pass "
          f"finds {door[0]}/{n}, the zoomed-out pass {door[1]} more (at distances {helped or 'none'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
