"""MediaPipe's four models under onnxruntime (the ONNX an export carries) and LiteRT (their own .tflite), in turns.

    python -m benchmarks.runtimes [--rounds 200] [--pin 0]

One process, one thread per session, each model's sessions called in a shuffled order per round on the same
random input, so both see the same machine. Prints a table (median ms, ratio onnxruntime / LiteRT) and the
largest output difference between the two; toolkit.inference.litert's choice rests on these numbers
(docs/runtimes.md). Needs the weights cache's converted models (``toolkit export`` of a hand or face model, or
the tests, make them) and ai-edge-litert.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def models() -> dict:
    """{name: (ONNX the door would run, its .tflite, input shape)} from the weights cache."""
    from toolkit.models.facemesh import ensure_face_mesh
    from toolkit.models.hands import ensure_hand_models

    hands, face = ensure_hand_models(), ensure_face_mesh()
    return {
        "BlazeFace (face detector)": (face.detector, face.twins.get("detector"), (1, 128, 128, 3)),
        "face mesh (468 points)": (face.landmark, face.twins.get("landmark"), (1, 192, 192, 3)),
        "palm detector": (hands.palm, hands.twins.get("palm"), (1, 192, 192, 3)),
        "hand landmarks": (hands.landmark, hands.twins.get("landmark"), (1, 224, 224, 3)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--pin", type=int, default=0, help="CPU core to pin to (-1: not pinned)")
    args = parser.parse_args(argv)
    if args.pin >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.pin})
    from toolkit.inference.litert import LiteSession, open_model

    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} cores), "
          f"{'pinned to core ' + str(args.pin) if args.pin >= 0 else 'not pinned'}, 1 thread, {args.rounds} rounds")
    print("| model | onnxruntime median | LiteRT median | onnxruntime / LiteRT | max output difference |")
    print("|---|---|---|---|---|")
    os.environ["TOOLKIT_RUNTIME"] = "onnxruntime"
    for name, (onnx_path, tflite, shape) in models().items():
        if tflite is None:
            print(f"| {name} | no .tflite in the weights cache | | | |")
            continue
        sessions = {"onnxruntime": open_model(onnx_path, 1, name), "litert": LiteSession(tflite, 1)}
        feed_name = sessions["onnxruntime"].get_inputs()[0].name
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        outs = {k: s.run(None, {feed_name: x}) for k, s in sessions.items()}
        diff = max(float(np.abs(a - b).max() / max(1.0, float(np.abs(a).max())))
                   for a, b in zip(outs["onnxruntime"], outs["litert"], strict=True))  # fmt: skip
        times = {k: [] for k in sessions}
        rng = np.random.default_rng(1)
        for _ in range(args.rounds):
            for k in rng.permutation(list(sessions)):
                start = time.perf_counter()
                sessions[k].run(None, {feed_name: x})
                times[k].append((time.perf_counter() - start) * 1000)
        o, lt = (float(np.median(times[k])) for k in ("onnxruntime", "litert"))
        print(f"| {name} ({onnx_path.name} / {tflite.name}) | {o:.2f} ms | {lt:.2f} ms | {o / lt:.2f} | "
              f"{diff:.1e} (relative above 1) |")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
