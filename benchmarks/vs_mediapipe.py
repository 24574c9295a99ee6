"""The toolkit's perception chains against mediapipe 0.10.21's own, timed in turns on the same frames.

    python -m benchmarks.vs_mediapipe [--rounds 200] [--modes threads,pinned] [--toolkit-src DIR]
                                      [--mp-python PATH] [--seed 0] [--rows "no face,face mesh moving"]

Two worker processes (benchmarks/vs_mediapipe_worker.py), one per side, one chain call per request: the toolkit
in this interpreter (its chains as the door runs them, one thread per model), mediapipe in a throwaway Python
3.11 venv with numpy<2 (mediapipe pins it; never a dependency of the project): created once under
``$TOOLKIT_CACHE/venvs/mediapipe-0.10.21`` from the wheel in the weights cache unless ``--mp-python`` names one.
Per frame the two sides run one after the other, in a random order. Modes: ``threads`` (one thread each, as
far as each side lets it be set) and ``pinned`` (both processes on one core with ``taskset``: no side can use
more than one, and they never run at the same time).

Frames (640x480, composed from the development photos): a sign_digits hand (200 px) moving up to ~1.6 px a
frame over a textured wall; the same wall without a hand (sensor noise per frame); a smiles face (240 px, ~0.7 m)
moving likewise. ``--toolkit-src`` runs the toolkit side from another checkout (e.g. the commit before a
change, ``git archive COMMIT | tar -x -C DIR``): the "before" table.

Needs the hand models and BlazeFace in the weights cache (``toolkit export`` of a hand export and ``toolkit
detector`` put them there) and the smiles photos. Prints the table per mode (medians, p90, hands found), the
toolkit's per-stage times, the load average before and after, and ends with one line per row and mode,
``ratio <row>[ pinned]: <toolkit / mediapipe>``. The face-mesh rows time the chain up to the landmarks
(detector + face mesh) against mediapipe's FaceMesh (``refine_landmarks=False``: the same models): moving (the
door follows the face; FaceMesh video mode), every frame (a photo's; static mode) and no face (video mode).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import CHECKOUT
from benchmarks.vs_mediapipe_worker import ROWS, _file

WORKER = Path(__file__).with_name("vs_mediapipe_worker.py")
HAND = CHECKOUT / "tests" / "fixtures" / "hands_parity" / "5" / "IMG_1123.JPG"  # a sign_digits photo, committed
FACES = CHECKOUT.parent / "shared" / "datasets" / "smiles" / "smile"
WHEEL = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
MP_NAMES = {"moving hand": "video mode", "palm every frame": "static mode", "no hand": "video mode",
            "face detector": "FaceDetection short range", "face mesh moving": "FaceMesh video mode",
            "face mesh every frame": "FaceMesh static mode", "no face": "FaceMesh video mode"}  # fmt: skip


def wall(rng: np.random.Generator, h: int = 480, w: int = 640) -> np.ndarray:
    """A door-side wall: a soft gradient with low-frequency texture (uint8 RGB)."""
    from PIL import Image, ImageFilter

    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 120 + 40 * xs / w - 30 * ys / h
    noise = Image.fromarray(rng.integers(0, 256, (h // 8, w // 8), dtype=np.uint8)).resize((w, h))
    texture = np.asarray(noise.filter(ImageFilter.GaussianBlur(6)), np.float32) - 128
    out = np.clip(base[..., None] + 0.4 * texture[..., None] + np.array([8, 0, -10]), 0, 255)
    return out.astype(np.uint8)


def compose(background: np.ndarray, patch: np.ndarray, x: float, y: float) -> np.ndarray:
    out = background.copy()
    x, y = int(round(x)), int(round(y))
    out[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
    return out


def path(i: int, rounds: int) -> tuple[float, float]:
    """A slow loop: at most ~1.6 px per frame (50 px amplitude over 200 frames)."""
    t = 2 * math.pi * i / 200
    return 220 + 50 * math.sin(t), 140 + 20 * math.sin(t * 1.5)


def make_frames(folder: Path, rounds: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    bg = wall(rng)
    with Image.open(HAND) as img:
        hand = np.asarray(img.convert("RGB").resize((200, 200), Image.Resampling.BILINEAR))
    faces = sorted(FACES.glob("*.jpg"))[:1] if FACES.is_dir() else []
    if not faces:
        raise SystemExit(f"{FACES}: the smiles photos are needed for the face row (see /work/shared/datasets)")
    with Image.open(faces[0]) as img:
        face = np.asarray(img.convert("RGB").resize((240, 240), Image.Resampling.BILINEAR))

    def noisy(frame):
        return np.clip(frame.astype(np.int16) + rng.integers(-3, 4, frame.shape), 0, 255).astype(np.uint8)

    moving = np.stack([noisy(compose(bg, hand, *path(i, rounds))) for i in range(rounds)])
    rows = {"moving hand": moving, "no hand": np.stack([noisy(bg) for _ in range(rounds)]),
            "face detector": np.stack([noisy(compose(bg, face, *path(i, rounds))) for i in range(rounds)])}
    for row, frames in rows.items():  # the other rows read these files (vs_mediapipe_worker.SAME_FRAMES)
        np.save(folder / _file(row), frames)


def mediapipe_python(given: str | None) -> str:
    """The throwaway venv's python: ``given``, else created once in the cache from the wheel there."""
    if given:
        return given
    from toolkit.inference.cache import cache_home, weights_root

    venv = cache_home() / "venvs" / "mediapipe-0.10.21"
    python = venv / "bin" / "python"
    if python.is_file():
        return str(python)
    wheel = weights_root() / WHEEL
    base = shutil.which("python3.11")
    if not wheel.is_file() or not base:
        raise SystemExit(f"need python3.11 and {wheel} (toolkit export fetches the wheel) to build {venv}")
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel), "numpy<2"], check=True)
    return str(python)


class Worker:
    def __init__(self, side: str, python: str, frames: Path, pin: str | None, env: dict) -> None:
        cmd = [python, str(WORKER), side, str(frames)]
        if pin is not None:
            cmd = ["taskset", "-c", pin, *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        if not self.ask(None).get("ready"):
            raise SystemExit(f"{side} worker did not start")

    def ask(self, request: dict | None) -> dict:
        if request is not None:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.proc.args} died (run it by hand to see why)")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def run_mode(mode: str, args, frames: Path, mp_python: str) -> tuple[dict, dict]:
    pin = "0" if mode == "pinned" else None
    single = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    src = str(Path(args.toolkit_src).resolve()) if args.toolkit_src else str(CHECKOUT)
    tk_env = {**os.environ, **single, "PYTHONPATH": src}
    mp_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    mp_env.update(single, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="3")
    sides = {"toolkit": Worker("toolkit", sys.executable, frames, pin, tk_env),
             "mediapipe": Worker("mediapipe", mp_python, frames, pin, mp_env)}
    rng = np.random.default_rng(args.seed)
    times = {row: {s: [] for s in sides} for row in args.rows}
    found = {row: {s: 0 for s in sides} for row in args.rows}
    try:
        for row in args.rows:
            for i in range(args.rounds):  # in order: the moving rows are sequences
                for side in rng.permutation(list(sides)):
                    answer = sides[side].ask({"row": row, "i": i})
                    times[row][side].append(answer["ms"])
                    found[row][side] += answer["found"]
        stages = sides["toolkit"].ask({"stages": True})["stages"]
    finally:
        for w in sides.values():
            w.close()
    return {"times": times, "found": found}, stages


def report(mode: str, result: dict, stages: dict, rounds: int) -> list[str]:
    print(f"\n## {mode}: {'both on core 0 (taskset -c 0)' if mode == 'pinned' else 'one thread each, unpinned'}"
          f", {rounds} frames per row, 640x480")
    print("| frames | toolkit median (p90) | mediapipe median (p90) | found toolkit / mediapipe | ratio |")
    print("|---|---|---|---|---|")
    lines = []
    for row in result["times"]:
        t, m = (np.asarray(result["times"][row][s]) for s in ("toolkit", "mediapipe"))
        ratio = float(np.median(t) / np.median(m))
        f = result["found"][row]
        print(f"| {row} | {np.median(t):.2f} ms ({np.percentile(t, 90):.2f}) | {np.median(m):.2f} ms "
              f"({np.percentile(m, 90):.2f}, {MP_NAMES[row]}) | {f['toolkit']} / {f['mediapipe']} | {ratio:.2f} |")
        lines.append(f"ratio {row}{' pinned' if mode == 'pinned' else ''}: {ratio:.3f}")
    times = {k: v for k, v in stages.items() if not isinstance(v, str)}
    print("toolkit per-stage medians (ms, first frame of the row, 25 runs): "
          + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
    runtimes = {k.removeprefix("runtime "): v for k, v in stages.items() if isinstance(v, str)}
    if runtimes:
        print("toolkit runtimes: " + ", ".join(f"{k} {v}" for k, v in runtimes.items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="frames per row (each timed on both sides)")
    parser.add_argument("--modes", default="threads,pinned", help="threads, pinned or both (comma-separated)")
    parser.add_argument("--toolkit-src", help="run the toolkit side from this checkout (the 'before' table)")
    parser.add_argument("--mp-python", help="python of a venv with mediapipe 0.10.21 (default: build one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows to time (comma-separated, of: {', '.join(ROWS)})")
    args = parser.parse_args(argv)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if not args.rows or set(args.rows) - set(ROWS):
        parser.error(f"--rows: pick among {', '.join(ROWS)}")
    mp_python = mediapipe_python(args.mp_python)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} cores); "
          f"toolkit from {args.toolkit_src or CHECKOUT}")
    lines = []
    with tempfile.TemporaryDirectory(prefix="vs-mediapipe-") as tmp:
        make_frames(Path(tmp), args.rounds, args.seed)
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            result, stages = run_mode(mode, args, Path(tmp), mp_python)
            lines += report(mode, result, stages, args.rounds)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
