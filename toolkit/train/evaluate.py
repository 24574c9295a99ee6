"""``toolkit evaluate`` and ``toolkit predict``: metrics on held-out data, labels for single photos."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from toolkit import metrics
from toolkit._keras import predict_array
from toolkit.errors import ToolkitError
from toolkit.train import runs

log = logging.getLogger("toolkit.evaluate")
TTA_CROP = 0.875  # multi-crop at test time: four corners and the centre at 87.5% of the side


def predict_arrays(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, K) for uint8/float images 0-255, batched through ``model.predict``."""
    if len(x) == 0:
        return np.zeros((0, max(2, model.output_shape[-1])))
    return metrics.as_class_probs(predict_array(model, x.astype(np.float32), batch_size))


def tta_views(x: np.ndarray) -> list[np.ndarray]:
    """Ten views per image (the classic multi-crop): 5 crops resized back, and their mirror images."""
    from toolkit._keras import tf

    t = tf()
    n, h, w = x.shape[:3]
    c = TTA_CROP
    boxes = [(0, 0, c, c), (0, 1 - c, c, 1), (1 - c, 0, 1, c), (1 - c, 1 - c, 1, 1),
             ((1 - c) / 2, (1 - c) / 2, (1 + c) / 2, (1 + c) / 2)]
    xf = t.constant(x.astype(np.float32))
    views = []
    for box in boxes:
        crop = t.image.crop_and_resize(xf, np.tile(np.float32(box), (n, 1)), np.arange(n, dtype=np.int32), (h, w))
        views.append(crop.numpy())
        views.append(crop.numpy()[:, :, ::-1, :])
    return views


def evaluate_model(model, x: np.ndarray, y: np.ndarray, labels: tuple, *, tta: bool = False) -> dict:
    """Accuracy, loss, per-class scores, confusion matrix, and for 2 classes a FAR/FRR threshold table."""
    if tta:
        probs = np.mean([predict_arrays(model, v) for v in tta_views(x)], axis=0)
    else:
        probs = predict_arrays(model, x)
    report = metrics.classification_report(y, probs, labels)
    report["tta"] = tta
    if len(labels) == 2:
        report["thresholds"] = metrics.threshold_table(probs[:, 1], np.asarray(y) == 1)
    return report


def evaluate_run(run: runs.Run, *, split=None, data: str | None = None, tta: bool = False,
                 out: Path | None = None, strict: bool = False) -> dict:
    """Evaluate a run's best model on its test split (or on ``data``) and write metrics + a confusion PNG."""
    if run.config.get("hands"):  # its model.keras is the head alone; the chain lives in the export folder
        raise ToolkitError(f"{run.path}: a hands run; its test figures are in metrics.json. To score other photos, "
                           f"export it (toolkit export {run.path} --out FOLDER) and evaluate FOLDER --data SPEC")
    from toolkit.train.plots import plot_confusion

    if split is None:
        split = eval_split(data, run.image_size, labels=run.labels, strict=strict) if data else run.splits().test
    if len(split) == 0:
        raise ToolkitError(f"{data or run.path}: no test images to evaluate on; pass --data")
    x, y = split.numpy()
    report = evaluate_model(run.load_model(), x, y, run.labels, tta=tta)
    report["data"] = data or run.config["train"]["data"]
    report["split"] = split.name
    report["fingerprint"] = split.fingerprint
    out = Path(out) if out else run.path
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json_atomic(out / runs.METRICS, report)
    plot_confusion(np.array(report["confusion"]), run.labels, out / "confusion.png")
    return report


def eval_split(spec: str, image_size, labels: tuple | None = None, strict: bool = False):
    """The evaluation part of a data source: its own test set if it has one (an h5 test file), else all."""
    from toolkit.data import load_data
    from toolkit.data.labels import align_labels

    ds = load_data(spec, image_size, strict=strict)
    if labels is not None:
        ds = align_labels(ds, labels)
    splits = ds.split(seed=0, val=0.0, test=0.0)
    return splits.test if len(splits.test) else splits.train


def evaluate(source: str, *, data: str | None = None, tta: bool = False, out: str | None = None,
             strict: bool = False) -> dict:
    """Evaluate a run folder or a model file; a bare model file needs ``data`` and writes to ``out``."""
    path = Path(source)
    if not path.exists():
        raise ToolkitError(f"{source}: not found; pass a run folder or a .keras/.h5 model file")
    if path.is_dir():
        return evaluate_run(runs.load_run(path), data=data, tta=tta, out=Path(out) if out else None, strict=strict)
    if not data:
        raise ToolkitError(f"{source}: a model file has no test split of its own; pass --data")
    model = runs.load_keras_model(path)
    size = tuple(model.input_shape[1:3])
    split = eval_split(data, size, strict=strict)
    x, y = split.numpy()
    report = evaluate_model(model, x, y, split.labels, tta=tta)
    report["data"] = data
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        runs.write_json_atomic(Path(out) / runs.METRICS, report)
    return report


def predict(source: str, images: list[str]) -> list[dict]:
    """Label and probability for each image file, decoded exactly as in training (any size or mode)."""
    from toolkit.images import decode_image

    model, run = runs.resolve_model(source)
    labels = run.labels if run else None
    size = tuple(model.input_shape[1:3])
    x = np.stack([decode_image(p, size) for p in images])  # ImageError names the file
    probs = predict_arrays(model, x)
    labels = labels or tuple(str(i) for i in range(probs.shape[1]))
    return [{"image": img, "label": labels[int(p.argmax())], "probability": float(p.max()),
             "probabilities": {lab: float(v) for lab, v in zip(labels, p)}} for img, p in zip(images, probs)]
