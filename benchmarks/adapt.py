"""The door learns its own camera: sign_digits through a fixed "new camera" transform, before and after adapting.

    python -m benchmarks.adapt [--data DIR] [--per-class 40,60] [--ns 10,20,50,100] [--repeats 3] [--out DIR]

1. sign_digits, per class: ``source`` photos (the shipped head's training data, as photographed) and ``target``
   photos seen through a new camera: a fixed transform NOT in any training augmentation (the camera mounted
   rotated by 30 degrees, a warm white balance (gains 1.25/1.0/0.8) and a slight blur (radius 1 px)).
2. Every photo goes through the real hand pipeline (MediaPipe's palm and landmark ONNX files from the weights
   cache, the door's :func:`~toolkit.inference.handpipe.hand_features`); features are cached in ``--out``.
3. The shipped head: the door's own numpy logistic regression, C chosen by 5-fold CV on the source features.
   It is written as a hand-sign export (palm + landmark + head.onnx) in ``--out/export``, which
   ``benchmarks.adapt_door`` runs.
4. For each n in ``--ns``: n labelled target photos (stratified, seeded; ``--repeats`` draws) refit the head as
   ``toolkit door adapt`` does (:func:`toolkit.runtime.adapt.fit_head_on_features`: CV over C, plain or pulled
   toward the shipped head, the "5" threshold from out-of-fold scores at target FAR 1 %); scored on every other
   target photo. A photo without a hand is a wrong answer, and no vote at the door.
   With one photo per class (n = 10) there is no cross-validation: the fit uses C = 1 and threshold 0.5.

Printed: accuracy (10 signs) and, for a door opening on sign "5", FAR (others accepted) and FRR (5s refused)
per frame, before (the shipped head, threshold 0.5, the door's --open-on default) and after.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from benchmarks import cli
from benchmarks.common import CHECKOUT

DATA = CHECKOUT.parent / "shared" / "datasets" / "sign_digits"
LABELS = tuple(str(i) for i in range(10))
OPEN_ON = "5"


def new_camera(image: np.ndarray) -> np.ndarray:
    """The fixed transform standing in for another camera: rotated 30 deg, warm white balance, slight blur."""
    from PIL import Image, ImageFilter

    img = Image.fromarray(image).rotate(30, resample=Image.BILINEAR, fillcolor=(0, 0, 0))
    arr = np.asarray(img, np.float32) * np.array([1.25, 1.0, 0.8], np.float32)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1))
    return np.asarray(img, np.uint8)


def split_files(data: Path, per_class: tuple[int, int], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {"source": [], "target": []}
    for i, lab in enumerate(LABELS):
        files = sorted(p for p in (data / lab).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        files = [files[j] for j in rng.permutation(len(files))]
        out["source"] += [(f, i) for f in files[:per_class[0]]]
        out["target"] += [(f, i) for f in files[per_class[0]:sum(per_class)]]
    return out


def features(items, transform, cache: Path, log) -> tuple[np.ndarray, np.ndarray]:
    """(N, 63) features (NaN rows: no hand) of each (file, label), through the real hand pipeline; cached."""
    if cache.is_file():
        z = np.load(cache)
        if list(z["files"]) == [str(f) for f, _ in items]:
            return z["x"], z["y"]
    from toolkit.images import decode_image
    from toolkit.inference.handpipe import hand_features, open_tracker
    from toolkit.models.hands import ensure_hand_models

    models = ensure_hand_models()
    tracker = open_tracker(models.palm, models.landmark)
    x = np.full((len(items), 63), np.nan, np.float32)
    start = time.perf_counter()
    for i, (f, _) in enumerate(items):
        image = decode_image(f, None)
        row, _ = hand_features(tracker, transform(image) if transform else image)
        if row is not None:
            x[i] = row
        if i % 100 == 99:
            log(f"  {cache.stem}: {i + 1}/{len(items)} photos ({time.perf_counter() - start:.0f} s)")
    y = np.array([lab for _, lab in items])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=x, y=y, files=np.array([str(f) for f, _ in items]))
    return x, y


def door_figures(probs: np.ndarray | None, found: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """Accuracy over all photos (no hand = wrong), FAR/FRR of a door opening on "5" at ``threshold``."""
    pred = np.full(len(y), -1)
    p5 = np.zeros(len(y))
    pred[found] = probs.argmax(1)
    p5[found] = probs[:, LABELS.index(OPEN_ON)]
    five = y == LABELS.index(OPEN_ON)
    accept = found & (p5 >= threshold)
    return {"accuracy": float(np.mean(pred == y)), "accuracy_hand": float(np.mean(pred[found] == y[found])),
            "far": float(np.mean(accept[~five])), "frr": float(np.mean(~accept[five])),
            "frr_hand": float(np.mean(~accept[five & found])), "threshold": float(threshold)}


def write_export(out: Path, head, log) -> Path:
    """A hand-sign export (the cached MediaPipe files + this head as head.onnx), like ``toolkit export`` writes."""
    import shutil

    from onnx import TensorProto, helper

    from toolkit.export.onnx import save_checked
    from toolkit.inference.handpipe import FEATURE_INPUT, PIPELINE
    from toolkit.inference.manifest import FileEntry, InputSpec, Manifest, sha256_file
    from toolkit.models.hands import copy_hand_models, ensure_hand_models

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    hands = {**copy_hand_models(out, ensure_hand_models()), "min_side": 256, "zoom_out": 0.5, "min_score": 0.5}
    kernel, bias = np.asarray(head.kernel, np.float32), np.asarray(head.bias, np.float32)
    nodes = [helper.make_node("MatMul", [FEATURE_INPUT, "kernel"], ["l0"]),
             helper.make_node("Add", ["l0", "bias"], ["l"]), helper.make_node("Softmax", ["l"], ["probs"], axis=-1)]
    inits = [helper.make_tensor("kernel", TensorProto.FLOAT, kernel.shape, kernel.ravel()),
             helper.make_tensor("bias", TensorProto.FLOAT, bias.shape, bias.ravel())]
    graph = helper.make_graph(nodes, "hands_head", [helper.make_tensor_value_info(FEATURE_INPUT, TensorProto.FLOAT,
                                                                                  ["N", 63])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])], inits)
    save_checked(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="toolkit"),
                 out / "head.onnx", {"pipeline": PIPELINE})
    entry = FileEntry(format="onnx", quantization="none", sha256=sha256_file(out / "head.onnx"),
                      bytes=(out / "head.onnx").stat().st_size)
    Manifest(name="signs-bench", model="hands", labels=LABELS, input=InputSpec(shape=(None, 256, 256, 3)),
             output_kind="softmax", files={"head.onnx": entry}, serve="head.onnx", target_far=0.01,
             pipeline=PIPELINE, hands=hands, data={"spec": str(DATA), "kind": "photos"}).write(out)
    log(f"wrote the shipped export {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("adapt", __doc__)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--per-class", type=cli.csv_ints, default=(40, 60), help="source,target photos per class")
    p.add_argument("--ns", type=cli.csv_ints, default=(10, 20, 50, 100))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=CHECKOUT / "runs" / "adapt-bench")
    args = p.parse_args(argv)
    from toolkit.errors import ToolkitError
    from toolkit.inference import logreg
    from toolkit.runtime.adapt import fit_head_on_features

    if not args.data.is_dir():
        raise ToolkitError(f"--data {args.data}: no such folder (sign_digits; see /work/shared/datasets)")
    log = print
    items = split_files(args.data, args.per_class)
    xs, ys = features(items["source"], None, args.out / "source.npz", log)
    xt, yt = features(items["target"], new_camera, args.out / "target.npz", log)
    fs, ft = ~np.isnan(xs[:, 0]), ~np.isnan(xt[:, 0])
    log(f"source: {len(ys)} photos, hand in {int(fs.sum())}; target (new camera): {len(yt)}, hand in {int(ft.sum())}")
    cv = logreg.cross_validate(xs[fs], ys[fs], 10, folds=5)
    shipped = logreg.LinearHead.from_fit(logreg.fit_logreg(xs[fs], ys[fs], cv.c, 10))
    write_export(args.out / "export", shipped, log)
    clean = door_figures(shipped.class_probs(xs[fs]), np.ones(int(fs.sum()), bool), ys[fs], 0.5)
    log(f"shipped head (C {cv.c:g}): CV accuracy on the source photos {cv.accuracy:.3f}; on the new camera:")
    rows = []
    for n in args.ns:
        for rep in range(args.repeats):
            rng = np.random.default_rng(1000 * n + rep)
            pick = []
            for c in range(10):  # stratified: n // 10 per class (photos with a hand; the others are not data)
                have = np.flatnonzero(ft & (yt == c))
                pick += list(rng.choice(have, size=min(len(have), max(1, n // 10)), replace=False))
            pick = np.array(sorted(pick))
            rest = np.setdiff1d(np.arange(len(yt)), pick)
            before = door_figures(shipped.class_probs(xt[rest][ft[rest]]), ft[rest], yt[rest], 0.5)
            row = {"n": len(pick), "repeat": rep, "before": before}
            for prior in ("no", "yes", "auto"):
                if n // 10 >= 2:
                    fitted = fit_head_on_features(xt[pick], yt[pick], LABELS, shipped, "softmax", 0.01, prior=prior,
                                                  log=lambda s: None)
                    head, t = fitted["head"], fitted["thresholds"][OPEN_ON]["threshold"]
                    chosen = f"C {fitted['cv'].c:g}" + (" prior" if fitted["cv"].prior else " plain")
                else:  # one photo per class: no CV, C = 1, the door's default threshold
                    w0 = (logreg.prior_coef(shipped, xt[pick].mean(0), xt[pick].var(0)) if prior == "yes" else None)
                    if prior == "auto":
                        continue
                    head = logreg.LinearHead.from_fit(logreg.fit_logreg(xt[pick], yt[pick], 1.0, 10, prior=w0))
                    t, chosen = 0.5, "C 1 (no CV)"
                fig = door_figures(head.class_probs(xt[rest][ft[rest]]), ft[rest], yt[rest], t)
                row[prior] = {**fig, "chosen": chosen}
            rows.append(row)
            log(json.dumps(row))
    print_table(rows, clean, args)
    (args.out / "results.json").write_text(json.dumps({"rows": rows, "shipped_on_source": clean}, indent=1))
    return 0


def print_table(rows: list, clean: dict, args) -> None:
    print(f"\nsign_digits, new camera = rotated 30 deg + warm white balance + blur; {args.per_class[1]} target photos "
          f"per class; mean over {args.repeats} draws; door opens on '{OPEN_ON}'")
    print(f"shipped head on its own (source) photos: accuracy {clean['accuracy']:.3f}")
    cols = (("before", "shipped head"), ("no", "plain"), ("yes", "prior"), ("auto", "CV picks"))
    print("each cell: accuracy on photos with a hand / accuracy on all (no hand = wrong) / FAR / FRR (all) / FRR "
          "(hand found)")
    print(f"{'n':>4}  " + "  ".join(f"{title:>34}" for _, title in cols))
    for n in sorted({r["n"] for r in rows}):
        sel = [r for r in rows if r["n"] == n]

        def cell(key: str, sel: list = sel) -> str:
            got = [r[key] for r in sel if key in r]
            if not got:
                return f"{'-':>34}"
            m = {k: np.mean([g[k] for g in got]) for k in ("accuracy_hand", "accuracy", "far", "frr", "frr_hand")}
            return "/".join(f"{m[k]:.3f}" for k in ("accuracy_hand", "accuracy", "far", "frr", "frr_hand")).rjust(34)

        print(f"{n:>4}  " + "  ".join(cell(key) for key, _ in cols))


if __name__ == "__main__":
    cli.run(main)
