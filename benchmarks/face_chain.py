"""Door frame -> decision latency of a face-landmark export, with a face in the frame and without one.

    python -m benchmarks.face_chain --model exported/happy [--frames 100] [--threads 1]

``toolkit door bench`` times frames that hold no face (the detector's worst case). Here the frame also holds a
face: the public-domain astronaut's face quarter at 64x64 (a ~25 px face) upscaled to 256 and centred in a
640x480 grey frame (the parity fixture's ``door`` input), so every stage runs: detector, face mesh, aligned crop,
expression CNN (when the head reads it), head. p50/p99 of the door's own ``Predictor.predict`` on one thread,
the two frames timed in turns, and three stages once more on their own.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import cli

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("face_chain", __doc__)
    p.add_argument("--model", required=True, help="a face-landmark export folder")
    p.add_argument("--frames", type=cli.positive(int), default=100)
    p.add_argument("--threads", type=cli.positive(int), default=1)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_facemesh_parity import prepare

    from toolkit.inference.facemesh import aligned_crop, face_rect
    from toolkit.inference.predictor import Predictor
    from toolkit.runtime.bench import camera_like_frame

    pred = Predictor(args.model, threads=args.threads)
    if not pred.is_face:
        print(f"error: {args.model} is not a face-landmark export (pipeline {pred.manifest.pipeline!r})")
        return 2
    face_frame = prepare(ROOT / "tests" / "fixtures" / "facemesh_parity", "door")
    empty = camera_like_frame((480, 640), 0)
    for frame in (face_frame, empty):
        pred.predict(frame)  # warm-up
    times = {"face": [], "no face": []}
    for _ in range(args.frames):
        for name, frame in (("face", face_frame), ("no face", empty)):
            start = time.perf_counter()
            pred.predict(frame)
            times[name].append((time.perf_counter() - start) * 1000)
    got = pred.predict(face_frame)
    print(f"{args.model} ({'+'.join(pred.manifest.face['blocks'])}, threads={args.threads}, {args.frames} frames "
          f"of 640x480 each, in turns): face found: {got.details['face'] is not None}")
    for name, ms in times.items():
        p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
        print(f"  frame -> decision, {name:7s}: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    chain = pred.hands  # the face pipeline
    image = face_frame
    stages = {
        "detector (whole frame)": lambda: chain.detector.detect(image),
        "face mesh (crop + model)": lambda: chain.mesh.from_detection(image, det),
        "aligned crop": lambda: aligned_crop(image, face),
    }
    det = chain.detector.detect(image)[0]
    face = chain.mesh.from_detection(image, det)
    face_rect(det)
    for name, fn in stages.items():
        ms = []
        for _ in range(max(10, args.frames // 4)):
            start = time.perf_counter()
            fn()
            ms.append((time.perf_counter() - start) * 1000)
        print(f"  stage {name:26s}: p50 {np.percentile(ms, 50):6.2f} ms")
    return 0


if __name__ == "__main__":
    cli.run(main)
