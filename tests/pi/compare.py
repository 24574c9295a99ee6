"""The Pi check's Python side (tests/pi/pi_check.sh): x86 reference, arm64 comparison, versions, no TensorFlow.

    compare.py reference --model exported/happy --out DIR   (x86) draw images, save PNGs + probabilities
    compare.py check --model exported/happy --reference DIR  (arm64) same images, print max |Δprobability|
    compare.py versions                                      what is installed and importable, and where
    compare.py no-tensorflow                                 fail if anything from the train extra is installed
    compare.py requirements dev pytest onnx                  those packages' pins from pyproject.toml

Only ``reference`` imports from the training side (the synthetic image generator, numpy + Pillow); the rest
needs the door install alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

REFERENCE = "reference.json"
# Distributions of the train extra and what they pull in; none may reach a door install.
TRAIN_SIDE = (
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-aarch64",
    "tensorflow-io-gcs-filesystem",
    "tf-keras",
    "keras",
    "tensorflow-model-optimization",
    "tf2onnx",
    "tensorboard",
    "h5py",
)
# Door-runtime distributions and the module each one must import as.
DOOR_MODULES = {
    "door-camera-toolkit": "toolkit.inference.predictor",  # this project (its wheel), imported as toolkit
    "numpy": "numpy",
    "onnxruntime": "onnxruntime",
    "pillow": "PIL.Image",
    "opencv-python-headless": "cv2",
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "httptools": "httptools",
    "uvloop": "uvloop",
    "python-multipart": "multipart",
    "prometheus-client": "prometheus_client",
    "gpiozero": "gpiozero",
    "ai-edge-litert": "ai_edge_litert.interpreter",  # MediaPipe's .tflite files at the door (docs/runtimes.md)
    "typer": "typer",
}


def onnx_files(model: Path) -> list[str]:
    manifest = json.loads((model / "manifest.json").read_text())
    return sorted(name for name, entry in manifest["files"].items() if entry["format"] == "onnx")


def predict(model: Path, images: list[Path]) -> dict[str, list[float]]:
    """P(positive) (sigmoid) or the class probabilities (softmax) of every ONNX file, one row per image."""
    import numpy as np

    from toolkit.inference.predictor import Predictor

    out = {}
    for name in onnx_files(model):
        predictor = Predictor(model, name, threads=1)
        batch = [predictor.load(p) for p in images]
        out[name] = predictor.run(np.stack(batch)).tolist()
    return out


def reference(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from toolkit.data.synthetic import generate

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Larger than the model input, so the runtime's decode + resize runs too.
    x, y = generate("happy", args.n, seed=args.seed, size=(96, 96))
    images = []
    for i, img in enumerate(x):
        path = out / f"face_{i}_{'smile' if y[i] else 'no_smile'}.png"
        Image.fromarray(np.asarray(img)).save(path)
        images.append(path.name)
    probs = predict(Path(args.model), [out / name for name in images])
    record = {"machine": platform.machine(), "images": images, "probabilities": probs, "versions": _versions()}
    (out / REFERENCE).write_text(json.dumps(record, indent=1))
    print(f"x86 reference: {len(images)} images, files {', '.join(probs)} ({platform.machine()})")
    return 0


def check(args: argparse.Namespace) -> int:
    import numpy as np

    ref_dir = Path(args.reference)
    ref = json.loads((ref_dir / REFERENCE).read_text())
    model = Path(args.model)
    manifest = json.loads((model / "manifest.json").read_text())
    images = [ref_dir / name for name in ref["images"]]
    here = predict(model, images)
    print(f"prediction: demo model {model.name} on {len(images)} images, {platform.machine()} vs {ref['machine']}")
    print(f"  {'file':<18} {'max |Δp|':>10} {'mean |Δp|':>10} {'tolerance':>10}  decisions agree")
    failed = False
    for name, rows in here.items():
        a, b = np.asarray(rows, dtype=np.float64), np.asarray(ref["probabilities"][name], dtype=np.float64)
        diff = np.abs(a - b)
        entry = manifest["files"][name]
        # Float kernels differ only in rounding; int8 ones may round an output step or two apart
        # (x86 and ARM accumulate differently): the Pi must make the same decisions either way.
        tol = args.atol_float if entry.get("quantization", "none") in ("none", "float16") else args.atol_quantized
        thr = entry.get("threshold") or 0.5
        if manifest["output_kind"] == "sigmoid":
            agree = int(np.sum((a[:, 0] >= thr) == (b[:, 0] >= thr)))
        else:
            agree = int(np.sum(a.argmax(1) == b.argmax(1)))
        ok = diff.max() <= tol and agree == len(images)
        failed |= not ok
        print(
            f"  {name:<18} {diff.max():>10.2e} {diff.mean():>10.2e} {tol:>10.2g}  {agree}/{len(images)}"
            f"{'' if ok else '  FAIL'}"
        )
    for i, path in enumerate(images):
        cells = "  ".join(f"{n}: {here[n][i][0]:.6f} vs {ref['probabilities'][n][i][0]:.6f}" for n in here)
        print(f"  {path.name:<22} {cells}")
    return 1 if failed else 0


def _versions() -> dict[str, str | None]:
    found = {}
    for dist in DOOR_MODULES:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def versions(args: argparse.Namespace) -> int:
    import importlib

    os_name = "?"
    if Path("/etc/os-release").is_file():
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        os_name = fields.get("PRETTY_NAME", "?").strip('"')
    cpu = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith(("CPU part", "Model"))
    ]
    print(
        f"platform: {platform.machine()}, {os_name}, Python {platform.python_version()}, "
        f"glibc {platform.libc_ver()[1]}, QEMU_CPU={os.environ.get('QEMU_CPU', '-')}, "
        f"cpuinfo {' / '.join(dict.fromkeys(cpu))}"
    )
    failed = False
    for dist, module in DOOR_MODULES.items():
        version = _versions()[dist]
        try:
            importlib.import_module(module)
            status = "imports"
        except Exception as exc:  # a wheel that installs but cannot load on this CPU is the point of the check
            status = f"IMPORT FAILED: {type(exc).__name__}: {exc}"
            failed = True
        print(f"  {dist:<24} {version or 'not installed':<12} {status}")
        failed |= version is None
    import onnxruntime as ort

    print(f"  onnxruntime providers: {', '.join(ort.get_available_providers())}")
    return 1 if failed else 0


def no_tensorflow(args: argparse.Namespace) -> int:
    import importlib.util

    installed = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in metadata.distributions()}
    pulled = sorted(installed & set(TRAIN_SIDE))
    importable = [m for m in ("tensorflow", "tf_keras", "keras") if importlib.util.find_spec(m)]
    if pulled or importable:
        print(f"error: the door install pulled the training side: {', '.join(pulled + importable)}", file=sys.stderr)
        return 1
    print(f"no TensorFlow: {len(installed)} distributions installed, none of {', '.join(TRAIN_SIDE[:4])}, ...")
    return 0


def requirements(args: argparse.Namespace) -> int:
    import re

    import tomllib

    pyproject = tomllib.loads(Path(args.pyproject).read_text())
    deps = pyproject["project"]["optional-dependencies"][args.extra]
    wanted = {n.lower() for n in args.names}
    picked = [d for d in deps if re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0].lower() in wanted]
    if len(picked) != len(wanted):
        print(f"error: pyproject.toml extra {args.extra!r} lacks some of {sorted(wanted)}", file=sys.stderr)
        return 1
    print("\n".join(picked))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("reference")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=2024)
    p.set_defaults(fn=reference)
    p = sub.add_parser("check")
    p.add_argument("--model", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--atol-float", type=float, default=1e-4)
    p.add_argument("--atol-quantized", type=float, default=0.05)
    p.set_defaults(fn=check)
    sub.add_parser("versions").set_defaults(fn=versions)
    sub.add_parser("no-tensorflow").set_defaults(fn=no_tensorflow)
    p = sub.add_parser("requirements")
    p.add_argument("extra")
    p.add_argument("names", nargs="+")
    p.add_argument("--pyproject", default=str(Path(__file__).resolve().parents[2] / "pyproject.toml"))
    p.set_defaults(fn=requirements)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
