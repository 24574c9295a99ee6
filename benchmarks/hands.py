"""Hand signs: pixels against landmarks on sign_digits, clean and through the camera-degradation set.

    python -m benchmarks.hands [--data DIR] [--classes 6,10] [--epochs 10] [--quick] [--out runs/hands-bench]
                               [--landmarks-only] [--no-camera] [--degrees 45]

For each class set (signs 0-5, then all 10) on one seeded split (70/15/15):

- ResNet50 from scratch on the pixels (64x64, ``--epochs``);
- ResNet50 with cached features: that sign_digits-trained ResNet50 as the base, a head chosen by
  ``toolkit finetune --cache-features --head auto`` (today's best pixel recipe);
- the landmark head: ``toolkit finetune hands --head cv`` (palm detector + 21 landmarks, 256x256 input).

(``--landmarks-only``: the landmark head alone, no export or door timing.) Every contender is scored on the same
test images, clean, degraded by every camera degradation at once
(:mod:`toolkit.degrade`, p=1, applied at the contender's own input size) and by each one alone. A test image
without a hand is a wrong answer for the landmark head; how many there are is printed per class. Then the
landmark run of the last class set is exported (validated end to end: agreement, max |dp|) and the door's
frame -> decision time is measured on 1 onnxruntime thread (640x480 frames from the test images).

For each class set, unless ``--no-camera``: a stand-in for another camera (:mod:`benchmarks.hands_camera`):
the test photos turned in the plane (uniformly within +-``--degrees``) and mirrored, scored with the hand
features of before (hands-2: not turned) and the new ones side by side, and the few-shot table (30 and 80
photos of the stand-in camera).

Resumable: finished runs and cached landmarks are reused; ``--quick`` trains 1 epoch on 300 images per set
(the table then says so: its pixel figures are not the models' best).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks import cli
from benchmarks.common import CHECKOUT

DATA = CHECKOUT.parent / "shared" / "datasets" / "sign_digits"


def class_folder(data: Path, k: int, out: Path) -> Path:
    """A folder of links to classes 0..k-1 of ``data`` (the loader reads it like the original)."""
    folder = out / f"data-{k}"
    folder.mkdir(parents=True, exist_ok=True)
    for c in range(k):
        link = folder / str(c)
        if not link.exists():
            link.symlink_to((data / str(c)).resolve(), target_is_directory=True)
    return folder


def _finished(out: Path):
    from toolkit.train import fit, runs

    return runs.load_run(out) if fit.is_finished(out) and (out / runs.CONFIG).is_file() else None


def pixel_scores(run, splits_test, degraded: dict) -> dict:
    """Test accuracy of a Keras run on the clean test images and on each degraded copy ({name: images})."""
    from toolkit._keras import predict_array
    from toolkit.metrics import as_class_probs

    x, y = splits_test.numpy()
    model = run.load_model()
    out = {}
    for name, images in {"clean": x, **degraded}.items():
        out[name] = float(np.mean(as_class_probs(predict_array(model, images.astype(np.float32), 32)).argmax(1) == y))
    return out


def landmark_scores(run, test, degraded: dict) -> dict:
    """The landmark head on the clean and degraded test images; no hand = wrong; no-hand counts per class."""
    from toolkit._keras import predict_array
    from toolkit.data.split import Split
    from toolkit.inference.handfeatures import FeatureSpec
    from toolkit.inference.handpipe import open_tracker, turns_of
    from toolkit.metrics import as_class_probs
    from toolkit.models.hands import ensure_hand_models
    from toolkit.train.hands import head_columns, landmark_features, models_key

    spec = FeatureSpec.from_record(run.config["hands"], str(run.path))
    models = ensure_hand_models()
    tracker = open_tracker(models.palm, models.landmark)
    head = run.load_model()
    min_side = int(run.config["hands"]["min_side"])
    out = {}
    splits = {"clean": test, **{name: Split(f"test-{name}", test.labels, test.y, test.image_size, x=images,
                                            groups=test.groups) for name, images in degraded.items()}}
    for name, split in splits.items():
        f = landmark_features(tracker, split, key_base=models_key(models), min_side=min_side,
                              zoom_out=float(run.config["hands"].get("zoom_out", 0.0)), orientation=spec.orientation,
                              turns=turns_of(run.config["hands"], str(run.path)))
        pred = np.full(len(f.y), -1)
        if f.found.any():
            pred[f.found] = as_class_probs(predict_array(head, head_columns(f.x, spec)[f.found], 256)).argmax(1)
        out[name] = float(np.mean(pred == f.y))
        out[f"no_hand_{name}"] = {lab: int(((f.y == i) & ~f.found).sum()) for i, lab in enumerate(test.labels)}
    return out


def degraded_sets(x: np.ndarray, seed: int) -> dict:
    """{"degraded": every degradation at once, and each one alone by name} of the test images ``x``."""
    from toolkit.degrade import DEGRADATIONS, degrade

    return {"degraded": degrade(x, DEGRADATIONS, seed=seed), **{k: degrade(x, (k,), seed=seed) for k in DEGRADATIONS}}


def _pixel_rows(row: dict, spec: str, out: Path, k: int, epochs: int, split: dict, seed: int) -> None:
    """The two ResNet50 contenders (from scratch, then cached features of it) into ``row``."""
    from toolkit.config import FinetuneConfig, TrainConfig
    from toolkit.data import load_data
    from toolkit.train.finetune import finetune
    from toolkit.train.fit import train

    pixels = load_data(spec, 64)
    test64 = pixels.split(**split).test
    bad64 = degraded_sets(test64.numpy()[0], seed)
    base = out / f"c{k}-resnet50-scratch"
    t0 = time.perf_counter()
    scratch = _finished(base) or train(TrainConfig(model="resnet50", data=spec, out=str(base), epochs=epochs,
                                                   image_size=64, batch_size=32, patience=0, **split), data=pixels)
    row["scratch"] = {**pixel_scores(scratch, test64, bad64), "seconds": time.perf_counter() - t0}
    cached_out = out / f"c{k}-resnet50-cached"
    t0 = time.perf_counter()
    cached = _finished(cached_out) or finetune(FinetuneConfig(
        model="resnet50", weights=str(scratch.path), data=spec, out=str(cached_out), cache_features=True,
        head="auto", epochs=max(epochs, 10), image_size=64, **split), data=pixels)
    row["cached"] = {**pixel_scores(cached, test64, bad64), "seconds": time.perf_counter() - t0}


def run_set(data: Path, k: int, out: Path, *, epochs: int, n: int | None, seed: int = 0, pixels: bool = True,
            camera: float | None = 45.0) -> dict:
    """The three contenders on classes 0..k-1 (``pixels`` False: the landmark head only); returns their
    clean/degraded accuracies and no-hand counts, and (``camera``: the largest turn, degrees) the stand-in
    camera's tables."""
    from toolkit.config import FinetuneConfig
    from toolkit.data import load_data
    from toolkit.train.finetune import finetune

    spec = str(class_folder(data, k, out)) + (f"?n={n}&seed=1" if n else "")
    split = dict(val=0.15, test=0.15, seed=seed)
    row: dict = {"classes": k, "epochs": epochs, "n": n}
    if pixels:
        _pixel_rows(row, spec, out, k, epochs, split, seed)
    hands_out = out / f"c{k}-hands"
    t0 = time.perf_counter()
    hands_data = load_data(spec, 256)
    hands = _finished(hands_out) or finetune(FinetuneConfig(model="hands", data=spec, out=str(hands_out), head="cv",
                                                            image_size=256, **split), data=hands_data)
    test256 = hands_data.split(**split).test
    scores = landmark_scores(hands, test256, degraded_sets(test256.numpy()[0], seed))
    row["hands"] = {k: v for k, v in scores.items() if not k.startswith("no_hand")}
    row["hands"]["seconds"] = time.perf_counter() - t0
    row["no_hand"] = {k[len("no_hand_"):]: v for k, v in scores.items() if k.startswith("no_hand")}
    row["test_n"] = len(test256)
    row["hands_run"] = str(hands.path)
    if camera is not None:
        from benchmarks.hands_camera import camera_table
        from toolkit.inference.handpipe import turns_of

        t0 = time.perf_counter()
        row["camera"] = camera_table(hands_data.split(**split), min_side=int(hands.config["hands"]["min_side"]),
                                     zoom_out=float(hands.config["hands"]["zoom_out"]), seed=seed,
                                     max_degrees=camera, turns=turns_of(hands.config["hands"], str(hands.path)))
        row["camera"]["seconds"] = time.perf_counter() - t0
    return row


def export_and_door(run_dir: Path, out: Path, frames: int = 60) -> dict:
    """Export the landmark run (validated end to end) and time the door's frame -> decision on 1 thread."""
    from PIL import Image

    from toolkit.export.api import export
    from toolkit.export.config import ExportConfig
    from toolkit.runtime.actuator import LogActuator
    from toolkit.runtime.core.config import DoorConfig, ModelConfig, PolicyConfig
    from toolkit.runtime.core.holder import ModelHolder
    from toolkit.runtime.door import DoorLoop
    from toolkit.train import runs

    folder = out / "exported-signs"
    export(ExportConfig(source=str(run_dir), out=str(folder), formats=("onnx",), overwrite=True), log=lambda m: None)
    manifest = json.loads((folder / "manifest.json").read_text())
    v = manifest["files"][manifest["serve"]]["validation"]
    run = runs.load_run(run_dir)
    x = run.splits().test.numpy()[0][:frames]
    big = [np.asarray(Image.fromarray(img).resize((640, 480))) for img in x]

    class Frames:
        live = False

        def __init__(self):
            self.left = list(big)

        def open(self):
            pass

        def close(self):
            pass

        def read(self):
            return self.left.pop(0) if self.left else None

    cfg = DoorConfig(camera="bench", policy=PolicyConfig(k=3, n=5, open_on=run.labels[-1], stale_seconds=1e9))
    loop = DoorLoop(ModelHolder(ModelConfig(folder, threads=1)), Frames(), cfg, LogActuator())
    times = []
    while True:
        t0 = time.perf_counter()
        if not loop.step():
            break
        times.append((time.perf_counter() - t0) * 1000)
    return {"agreement": v["agreement"], "max_abs_dprob": v["max_abs_dprob"], "accuracy": v["accuracy"],
            "float_accuracy": v["float_accuracy"], "no_hand": v["no_hand"], "n": v["n"],
            "door_ms_median": float(np.median(times)), "door_ms_p90": float(np.percentile(times, 90)),
            "frames": len(times), "folder": str(folder)}


def format_table(rows: list[dict], quick: bool) -> str:
    from toolkit.degrade import DEGRADATIONS

    kinds_head = " | ".join(f"{k} only" for k in DEGRADATIONS)
    lines = [f"| classes | test n | model | clean acc | degraded acc | {kinds_head} | seconds |",
             "|---|---:|---|---:|---:|" + "---:|" * len(DEGRADATIONS) + "---:|"]
    names = {"scratch": "ResNet50 from scratch", "cached": "ResNet50, cached features of the sign_digits base",
             "hands": "landmark head (palm + 21 points, cv)"}
    for r in rows:
        for key, name in names.items():
            if key not in r:  # --landmarks-only
                continue
            s = r[key]
            kinds = " | ".join(f"{100 * s[k]:.1f} %" for k in DEGRADATIONS)
            lines.append(f"| 0-{r['classes'] - 1} | {r['test_n']} | {name} | {100 * s['clean']:.1f} % | "
                         f"{100 * s['degraded']:.1f} % | {kinds} | {s['seconds']:.0f} |")
    lines.append("")
    lines.append("No hand found (counted wrong), per class, test split: clean / all degradations / "
                 + " / ".join(DEGRADATIONS))
    for r in rows:
        nh = r["no_hand"]
        order = ("clean", "degraded", *DEGRADATIONS)
        per = ", ".join(f"{c}: " + "/".join(str(nh[o][c]) for o in order) for c in nh["clean"])
        totals = "/".join(str(sum(nh[o].values())) for o in order)
        lines.append(f"  classes 0-{r['classes'] - 1}: {per} (total {totals})")
    if (quick or any(r["epochs"] < 10 for r in rows)) and any("scratch" in r for r in rows):
        lines.append(f"note: ResNet50 trained {rows[0]['epochs']} epoch(s)"
                     + (f" on {rows[0]['n']} images per set" if rows[0]["n"] else "")
                     + " (--quick or few --epochs): its figures are not its best")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the table, the export check and the door latency; print them (and write OUT/hands.json)."""
    parser = cli.parser("hands", __doc__)
    parser.add_argument("--data", type=Path, default=DATA, help="the sign_digits folder (class folders 0..9)")
    parser.add_argument("--classes", default="6,10", help="class-set sizes: 6 = signs 0-5, 10 = all")
    parser.add_argument("--epochs", type=cli.positive(int), default=10, help="ResNet50 from-scratch epochs")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 300 images per set: a cheap dry run")
    parser.add_argument("--out", type=Path, default=Path("runs/hands-bench"), help="runs and cache (reused)")
    parser.add_argument("--frames", type=cli.positive(int), default=60, help="door frames timed")
    parser.add_argument("--landmarks-only", action="store_true", help="the landmark head alone: no ResNet50, "
                        "no export or door timing")
    parser.add_argument("--no-camera", action="store_true", help="skip the stand-in camera (turned, mirrored)")
    parser.add_argument("--degrees", type=cli.positive(float), default=45.0, help="the stand-in camera's largest "
                        "turn, either way")
    ns = parser.parse_args(argv)
    if not ns.data.is_dir():
        parser.error(f"--data {ns.data}: not a folder")
    try:
        sets = [int(c) for c in ns.classes.split(",")]
    except ValueError:
        parser.error(f"--classes {ns.classes!r}: a comma list of numbers, e.g. 6,10")
    if not sets or any(not 2 <= k <= 10 for k in sets):
        parser.error(f"--classes {ns.classes!r}: each between 2 and 10")
    from toolkit.inference.cache import weights_root
    from toolkit.train.features import CACHE_ENV

    ns.out.mkdir(parents=True, exist_ok=True)
    if CACHE_ENV not in os.environ:  # the features in OUT, the fetched weights where they already are
        weights = weights_root()
        os.environ[CACHE_ENV] = str(ns.out.resolve() / "cache")
        if not weights_root().exists() and weights.is_dir():
            weights_root().parent.mkdir(parents=True, exist_ok=True)
            weights_root().symlink_to(weights.resolve(), target_is_directory=True)
    epochs, n = (1, 300) if ns.quick else (ns.epochs, None)
    rows = [run_set(ns.data, k, ns.out, epochs=epochs, n=n, pixels=not ns.landmarks_only,
                    camera=None if ns.no_camera else ns.degrees) for k in sets]
    door = None if ns.landmarks_only else export_and_door(Path(rows[-1]["hands_run"]), ns.out, ns.frames)
    (ns.out / "hands.json").write_text(json.dumps({"rows": rows, "export_door": door}, indent=2))
    print(format_table(rows, ns.quick))
    from benchmarks.hands_camera import format_camera

    for r in rows:
        if "camera" in r:
            print("\n" + format_camera(r["classes"], r["camera"]))
    if door is None:
        return 0
    print(f"\nexport {door['folder']} (classes 0-{sets[-1] - 1}), validated end to end on {door['n']} held-out "
          f"images: agreement {door['agreement']:.1f} %, max |dp| {door['max_abs_dprob']:.2e}, accuracy "
          f"{door['accuracy']:.1f} % (float {door['float_accuracy']:.1f} %), no hand {door['no_hand']}")
    print(f"door frame -> decision, 640x480, 1 thread: median {door['door_ms_median']:.1f} ms, "
          f"p90 {door['door_ms_p90']:.1f} ms over {door['frames']} frames")
    return 0


if __name__ == "__main__":
    cli.run(main)
