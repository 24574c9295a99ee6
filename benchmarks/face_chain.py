"""Door frame -> decision latency of a face-landmark export: a face judged alone, a face followed, no face.

    python -m benchmarks.face_chain --model exported/happy-face [--model OTHER] [--frames 100] [--threads 1]
        [--recall 60]

The face: the public-domain astronaut's face quarter at 64x64 (a ~25 px face) upscaled to 256 and placed in a
640x480 grey frame (the parity fixture's ``door`` input), moving 3 px right and 2 px down a frame over 16 frames
(then back), so every stage runs: detector, face mesh, aligned crop, expression CNN (when the head reads it),
head. No face: ``toolkit door bench``'s camera-like frames. Rows, p50/p99 of the door's own ``Predictor.predict``
on one thread, all timed in turns in one run:

- face, static: each frame judged alone (a photo, ``/predict``, training);
- face, followed: the door's camera stream (:mod:`toolkit.inference.facetrack`);
- no face, static: the photo path's every look (the plain pass, the frame zoomed out, 15 tiles);
- no face, door: the plain pass and the second looks' turn (8 different frames in turn: a changing scene);
- no face, door, still: one empty frame with fresh sensor noise each time (a still doorway: once every second look
  has run on it, the plain pass alone).

Each figure also as this process's CPU time (the work, without the wait for a core on a shared machine). Then
the stages on their own, and with ``--recall N`` the faces found in N door-like frames of ``smiles`` photos
(:func:`benchmarks.face_data.door_shift`: graded, the face ~25 px in 64, upscaled into a 640x480 frame): the
photo path, its plain pass alone, and the door path on the same frame repeated (a person standing at the door)
after 1 frame and after a whole cycle of second looks. The load average is printed: the machine is shared.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import cli

ROOT = Path(__file__).resolve().parents[1]


def timed_cpu(fn) -> tuple[float, float]:
    """(wall ms, this process's CPU ms): on a shared machine the CPU time is the work, the wall time adds the wait
    for a core."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("face_chain", __doc__)
    p.add_argument("--model", required=True, action="append",
                   help="a face-landmark export folder (repeat it: every model's rows are timed in turns)")
    p.add_argument("--frames", type=cli.positive(int), default=100)
    p.add_argument("--threads", type=cli.positive(int), default=1)
    p.add_argument("--recall", type=int, default=0, help="door-like frames of --data photos to count faces in")
    p.add_argument("--data", default="/work/shared/datasets/smiles")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_facemesh_parity import prepare

    from toolkit.inference.predictor import Predictor

    preds = [Predictor(m, threads=args.threads) for m in args.model]
    for model, pred in zip(args.model, preds, strict=True):
        if not pred.is_face:
            print(f"error: {model} is not a face-landmark export (pipeline {pred.manifest.pipeline!r})")
            return 2
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    door = prepare(ROOT / "tests" / "fixtures" / "facemesh_parity", "door")
    runs = [Rows(pred, door) for pred in preds]
    for i in range(8):  # warm-up: first runs allocate
        for run in runs:
            run.once(i, record=False)
    for i in range(args.frames):
        for run in runs:
            run.once(i)
    for model, run in zip(args.model, runs, strict=True):
        run.report(model, args.threads, args.frames + 8)
        stages(run.pred, door, max(10, args.frames // 4))
        if args.recall:
            recall(run.pred, Path(args.data), args.recall)
    if len(runs) > 1:
        for name in runs[0].times:
            ratio = np.percentile(runs[-1].times[name], 50) / np.percentile(runs[0].times[name], 50)
            cpu = np.percentile(runs[-1].cpu[name], 50) / np.percentile(runs[0].cpu[name], 50)
            print(f"ratio p50 {name}: {args.model[-1]} / {args.model[0]} = {ratio:.2f} (CPU {cpu:.2f})")
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


class Rows:
    """One export's four rows (see the module docstring), each frame's calls timed one after the other."""

    def __init__(self, pred, door: np.ndarray) -> None:
        from toolkit.runtime.bench import camera_like_frame

        self.pred = pred
        self.moving = [np.roll(door, (2 * t, 3 * t), axis=(0, 1)) for t in range(16)]
        self.empty = [camera_like_frame((480, 640), seed) for seed in range(8)]
        rng = np.random.default_rng(0)
        self.still = [np.clip(self.empty[0] + rng.normal(0, 3, self.empty[0].shape), 0, 255).astype(np.uint8)
                      for _ in range(8)]  # fmt: skip
        self.face_stream, self.empty_stream, self.still_stream = pred.stream(), pred.stream(), pred.stream()
        self.found = pred.predict(door).details["face"] is not None
        self.times: dict[str, list[float]] = {n: [] for n in ROWS}
        self.cpu: dict[str, list[float]] = {n: [] for n in ROWS}

    def once(self, i: int, record: bool = True) -> None:
        pred, face, empty, still = self.pred, self.moving[i % 16], self.empty[i % 8], self.still[i % 8]
        calls = {"face, static": lambda: pred.predict(face),
                 "face, followed": lambda: pred.predict(face, stream=self.face_stream),
                 "no face, static": lambda: pred.predict(empty),
                 "no face, door": lambda: pred.predict(empty, stream=self.empty_stream),
                 "no face, door, still": lambda: pred.predict(still, stream=self.still_stream)}  # fmt: skip
        for name in ROWS:
            if name == "no face, static" and i % 4:  # the slow row: a quarter of the frames
                continue
            ms, cpu = timed_cpu(calls[name])
            if record:
                self.times[name].append(ms)
                self.cpu[name].append(cpu)

    def report(self, model: str, threads: int, frames: int) -> None:
        print(f"{model} ({'+'.join(self.pred.manifest.face['blocks'])}, landmark "
              f"{self.pred.manifest.face['files']['landmark']}, threads={threads}, 640x480 frames timed in turns): "
              f"face found: {self.found}; the followed face's detector ran on {self.face_stream.detections} of "
              f"{frames} frames (the sequence jumps back every 16); no face, door: "
              f"{self.empty_stream.passes / frames:.1f} detector passes a frame, still: "
              f"{self.still_stream.passes / frames:.2f}")
        for name, ms in self.times.items():
            print(f"  frame -> decision, {name:20s}: p50 {np.percentile(ms, 50):6.2f} ms  p99 "
                  f"{np.percentile(ms, 99):6.2f} ms  (CPU p50 {np.percentile(self.cpu[name], 50):6.2f} ms; "
                  f"{len(ms)} frames)")


ROWS = ("face, static", "face, followed", "no face, static", "no face, door", "no face, door, still")


def stages(pred, image: np.ndarray, n: int) -> None:
    """Each stage of the chain on its own (p50 of ``n`` runs)."""
    from toolkit.inference.facemesh import LANDMARK_SIZE, aligned_crop, features, warp

    chain = pred.hands  # the face pipeline
    det = chain.detector.detect(image)[0]
    face = chain.mesh.from_detection(image, det)
    crop = warp(image, face.rect, LANDMARK_SIZE)
    x = (crop / 255.0)[None].astype(np.float32)
    tile = chain.detector.second_looks(image.shape[:2])[-1]
    aligned = aligned_crop(image, face)[None].astype(np.float32)
    row = chain.features(image)[0][None]
    parts = {
        "detector plain pass": lambda: chain.detector.detect_pass(image),
        "detector one tile": lambda: chain.detector.look(image, tile),
        "landmark crop (warp)": lambda: warp(image, face.rect, LANDMARK_SIZE),
        "landmark model": lambda: chain.mesh.session.run(None, {chain.mesh._input: x}),
        "landmark features": lambda: features(face),
        "aligned crop": lambda: aligned_crop(image, face),
        "head": lambda: pred.head(row),
    }
    if chain.expression is not None:
        parts["expression CNN"] = lambda: chain.expression.run(None, {chain._expression_input: aligned})
    for name, fn in parts.items():
        fn()
        wall, cpu = zip(*[timed_cpu(fn) for _ in range(n)], strict=True)
        print(f"  stage {name:22s}: p50 {np.percentile(wall, 50):6.2f} ms  (CPU p50 {np.percentile(cpu, 50):6.2f} ms)")


def recall(pred, data: Path, n: int) -> None:
    """Faces found in ``n`` door-like frames: the photo path, its plain pass alone, the door path over time."""
    from benchmarks.face_data import door_shift, list_photos, load, pick

    if not data.is_dir():
        print(f"  recall: {data} not found, skipped")
        return
    files, labels = list_photos(data)
    chain = pred.hands
    looks = len(chain.detector.second_looks((480, 640)))
    cycle = math.ceil(looks / max(1, chain.stream().looks_per_frame))
    photo = plain = first = 0
    after = []  # the frame the door path first found each face on (1 = at once)
    for i in pick(labels, n, seed=0):
        frame = door_shift(load(files[i]))
        photo += chain(frame) is not None
        plain += bool(chain.detector.detect_pass(frame))
        stream = chain.stream()
        found = [chain.features(frame, stream=stream)[1] is not None for _ in range(cycle)]
        first += found[0]
        if any(found):
            after.append(found.index(True) + 1)
    agreement(pred, [door_shift(load(files[i])) for i in pick(labels, n, seed=0)])
    print(f"  faces found in {n} door-like frames of {data.name} photos: photo path {photo}, its plain pass alone "
          f"{plain}; door path {first} on the first frame, {len(after)} within {cycle} frames (a whole cycle of "
          f"{looks} second looks; found on frame {np.median(after):.0f} median, {max(after)} at most)")


def agreement(pred, frames: list, steps: int = 6) -> None:
    """Answers of the followed face against the static chain's on the same frames.

    Each door-like frame (its face found first) moves 3 px right and 2 px down a frame for ``steps`` frames; the
    last frame's answers are compared, and the static chain's answer on the first frame against its own on the
    last (the static chain's jitter, as a yardstick)."""
    same = jitter_same = n = 0
    dp, jitter = [], []
    for frame in frames:
        moved = [np.roll(frame, (2 * t, 3 * t), axis=(0, 1)) for t in range(steps)]
        stream = pred.stream()
        for _ in range(16):  # found first (within a cycle of second looks), then followed as it moves
            if pred.predict(moved[0], stream=stream).label != "no_face":
                break
        followed = [pred.predict(f, stream=stream) for f in moved[1:]][-1]
        first, last = pred.predict(moved[0]), pred.predict(moved[-1])
        if "no_face" in (followed.label, last.label, first.label):
            continue
        n += 1
        same += followed.label == last.label
        jitter_same += first.label == last.label
        dp.append(abs(followed.probability - last.probability))
        jitter.append(abs(first.probability - last.probability))
    print(f"  followed vs static answers, {n} door-like faces moved {steps - 1} frames: same label {same}/{n}, "
          f"|dP| mean {np.mean(dp):.3f} max {np.max(dp):.3f}; static vs itself {steps - 1} frames earlier: same label "
          f"{jitter_same}/{n}, |dP| mean {np.mean(jitter):.3f} max {np.max(jitter):.3f}")


if __name__ == "__main__":
    cli.run(main)
