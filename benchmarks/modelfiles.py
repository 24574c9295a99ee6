"""Damaged model files: truncated and bit-flipped ``.keras``, ``.onnx`` and ``.tflite`` files.

Each damaged copy is loaded (and, if that works, run on one batch) by the loader the toolkit uses for
that format: ``runs.load_keras_model``, export's ``OnnxRunner`` and ``TFLiteRunner``. Loading happens
in a child process, so a loader that crashes the interpreter (a segfault in native code) is counted
instead of taking the check down. Outcomes: refused with a one-line ToolkitError, loaded (a bit flip
in the weights is invisible to a loader; the manifest's sha256 is what catches it), or crashed.

``python -m benchmarks.modelfiles FORMAT FILE...`` is the child: one JSON line per file.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.common import child_env

FORMATS = {".keras": "keras", ".onnx": "onnx", ".tflite": "tflite"}


def damaged_copies(source: Path, folder: Path, *, cuts: int, flips: int, rng: random.Random) -> list[Path]:
    """Write truncated and bit-flipped copies of ``source`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    out = []
    points = sorted({0, 1, 16, len(data) // 2, len(data) - 1, *(rng.randrange(len(data)) for _ in range(cuts))})
    for cut in points[: max(cuts, 1) + 5]:
        path = folder / f"cut{cut}{source.suffix}"
        path.write_bytes(data[:cut])
        out.append(path)
    for i in range(flips):
        arr = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            j = rng.randrange(len(arr))
            arr[j] ^= 1 << rng.randrange(8)
        path = folder / f"flip{i}{source.suffix}"
        path.write_bytes(bytes(arr))
        out.append(path)
    junk = folder / f"junk{source.suffix}"
    junk.write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    out.append(junk)
    return out


def _load(kind: str, path: Path):
    import numpy as np

    if kind == "keras":
        from toolkit.train.runs import load_keras_model

        model = load_keras_model(path)
        shape = [d or 1 for d in model.input_shape]
        model.predict(np.zeros(shape, np.float32), verbose=0)
        return
    from toolkit.export.validate import load_runner

    runner = load_runner(path, threads=1)
    if kind == "onnx":
        shape = [d if isinstance(d, int) else 1 for d in runner.session.get_inputs()[0].shape]
    else:
        shape = [int(d) or 1 for d in runner._in["shape"]]
    runner(np.zeros(shape, np.float32))


def _child(kind: str, files: list[str]) -> int:
    from toolkit.errors import ToolkitError

    for name in files:
        print(json.dumps({"file": name, "state": "start"}), flush=True)
        try:
            _load(kind, Path(name))
            outcome, message = "loaded", ""
        except ToolkitError as exc:
            outcome = "refused" if str(exc).strip() and "\n" not in str(exc) else "refused-multiline"
            message = str(exc)[:300]
        except Exception as exc:  # noqa: BLE001 - an exception escaping the loader is the finding
            outcome, message = "exception", f"{type(exc).__name__}: {str(exc)[:300]}"
        print(json.dumps({"file": name, "state": outcome, "message": message}), flush=True)
    return 0


def sweep(sources: list[Path], work: Path, *, cuts: int, flips: int, seed: int = 0) -> list[dict]:
    """Damage each source file and load every copy in a child; one row per format with the counts."""
    rng = random.Random(seed)
    rows = []
    for source in sources:
        kind = FORMATS[source.suffix]
        folder = work / kind
        shutil.rmtree(folder, ignore_errors=True)
        pending = [str(p) for p in damaged_copies(source, folder, cuts=cuts, flips=flips, rng=rng)]
        counts = {"refused": 0, "loaded": 0, "exception": 0, "crashed": 0, "refused-multiline": 0}
        examples: list[str] = []
        while pending:
            p = subprocess.run([sys.executable, "-m", "benchmarks.modelfiles", kind, *pending],
                               capture_output=True, text=True, errors="replace", env=child_env())
            done, started = set(), None
            for line in p.stdout.splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec["state"] == "start":
                    started = rec["file"]
                    continue
                done.add(rec["file"])
                counts[rec["state"]] += 1
                if rec["state"] not in ("refused", "loaded"):
                    examples.append(f"{Path(rec['file']).name}: {rec['message']}")
            if started is not None and started not in done:  # the child died on this file
                counts["crashed"] += 1
                examples.append(f"{Path(started).name}: child died (exit {p.returncode})")
                done.add(started)
            remaining = [f for f in pending if f not in done]
            if remaining == pending:  # no progress at all: the child failed before the first file
                raise RuntimeError(f"model loader child failed: {p.stderr[-1500:]}")
            pending = remaining
        rows.append({"format": kind, "cases": sum(counts.values()), **counts, "examples": examples[:3]})
    return rows


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2:]))
