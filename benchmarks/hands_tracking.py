"""A hand-sign export's answers when the door follows the hand, against the answers of each frame alone.

    python -m benchmarks.hands_tracking EXPORT [--data DIR] [--skip 40] [--per-class 10] [--frames 6]

Heads are trained on features of photos judged alone (palm detector, then landmarks); the door follows the
hand across frames (toolkit.inference.handtrack), whose landmarks differ slightly. For held-out sign_digits
photos (``--skip`` per class are left out: those the export was trained on), each photo is upscaled as training
does (256x256) and moved ~1.6 px a frame across a 640x480 wall for ``--frames`` frames. Printed accuracies
(no hand = wrong): the photo alone (the training condition), the last frame alone (palm detector every frame),
the last frame followed from the first (the door), and how many answers following changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import CHECKOUT
from benchmarks.vs_mediapipe import compose, wall

DATA = CHECKOUT.parent / "shared" / "datasets" / "sign_digits"


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    from toolkit.inference.handpipe import MIN_SIDE, upscale
    from toolkit.inference.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--skip", type=int, default=40, help="photos per class to leave out (the training ones)")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--frames", type=int, default=6)
    args = parser.parse_args(argv)
    pred = Predictor(args.export)
    bg = wall(np.random.default_rng(0))
    right = {"photo": 0, "frame alone": 0, "followed": 0}
    changed = total = 0
    for label in pred.labels:
        for path in sorted((args.data / label).glob("*.JPG"))[args.skip : args.skip + args.per_class]:
            with Image.open(path) as img:
                photo = np.asarray(img.convert("RGB").resize((100, 100), Image.Resampling.BILINEAR))
            big = upscale(photo, MIN_SIDE)
            frames = [compose(bg, big, 150 + 1.6 * i, 100 + 0.8 * i) for i in range(args.frames)]
            stream = pred.stream()
            followed = [pred.predict(f, stream=stream) for f in frames][-1]
            answers = {"photo": pred.predict(photo), "frame alone": pred.predict(frames[-1]), "followed": followed}
            for name, p in answers.items():
                right[name] += p.label == label
            changed += answers["frame alone"].label != followed.label
            total += 1
    print(f"{args.export.name}: {total} held-out sign_digits photos ({args.per_class} per class after the first "
          f"{args.skip}), {args.frames} frames each, moving ~1.8 px a frame")
    for name, n in right.items():
        print(f"accuracy {name}: {n / total:.1%} ({n}/{total})")
    print(f"answers changed by following: {changed}/{total}; followed - alone: "
          f"{100 * (right['followed'] - right['frame alone']) / total:+.1f} points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
