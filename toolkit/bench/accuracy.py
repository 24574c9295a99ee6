"""``toolkit evaluate`` on an export folder: the report of a run, measured on an exported ONNX file.

TensorFlow-free: data comes from :mod:`toolkit.data` (numpy and Pillow; a course ``.h5`` file needs h5py,
which says so in one line), the model runs in the door's own :class:`~toolkit.inference.predictor.Predictor`,
so the numbers are those of the file the door serves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from toolkit import metrics
from toolkit.errors import ToolkitError

METRICS = "metrics.json"  # the name `toolkit evaluate` writes in a run folder


def load_scored(spec: str, size: tuple[int, int], labels: tuple, *, every: bool, strict: bool = False):
    """The labelled split of ``spec`` to score a model with ``labels`` on, at its input ``size``.

    Args:
        spec: a data spec (image folder, course .h5, synthetic:...).
        size: (height, width) the model takes.
        labels: the model's class names; integer data labels 0..C-1 match them by index.
        every: every image of ``spec``; else its own test set when it has one (a course test_*.h5), else all,
            as ``toolkit evaluate MODEL --data`` does.
        strict: unreadable files are an error instead of a skipped warning.

    Raises:
        ToolkitError: unreadable data, labels that do not match, or no images.
    """
    from toolkit.data import load_data
    from toolkit.data.labels import align_labels

    ds = align_labels(load_data(spec, size, strict=strict), labels)
    if every:
        split = ds.all()
    else:
        splits = ds.split(seed=0, val=0.0, test=0.0)
        split = splits.test if len(splits.test) else splits.train
    if len(split) == 0:
        raise ToolkitError(f"{spec}: no images to score")
    return split


def class_probs(predictor, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """(N, K) class probabilities of ``x`` (uint8 at the model's size) from an export's ONNX file."""
    out = [predictor.run(x[i : i + batch]) for i in range(0, len(x), batch)]
    return metrics.as_class_probs(np.concatenate(out))


def evaluate_export(
    folder: str, *, data: str | None, file: str | None = None, out: str | None = None, tta: bool = False,
    strict: bool = False,
    state: str | None = None,
) -> dict:
    """Accuracy, loss, per-class scores and confusion matrix of an export folder's ONNX file on ``data``.

    Binary tasks also get the FAR/FRR table, with a row at the file's manifest threshold (the door's).

    Args:
        folder: an export folder (manifest.json + ONNX files).
        data: the data spec to score on; required, an export holds no test split.
        file: the ONNX file to score (default: the manifest's ``serve`` file).
        out: write metrics.json into this folder (never into the export folder unasked: it may be committed).
        tta: refused; the crops and flips of test-time augmentation need the Keras model.
        strict: unreadable files in ``data`` are an error instead of a skipped warning.

    Raises:
        ToolkitError: no ``data``, ``tta``, a bad export folder or file, unreadable data, labels that do not match.
    """
    from toolkit.inference.predictor import Predictor

    if tta:
        raise ToolkitError(f"{folder}: --tta needs the Keras model; evaluate the run folder or .keras file instead")
    if not data:
        raise ToolkitError(f"{folder}: an export folder holds no test split; pass --data SPEC (image folder, "
                           ".h5 file or synthetic:...)")
    version = None
    if state is not None:  # the head version the door serves from its state folder (toolkit door adapt)
        from toolkit.inference import versions

        vid = versions.current(state)
        if vid is None:
            raise ToolkitError(f"--state {state}: no adapted version is chosen there; the export's own head serves "
                               "(evaluate without --state)")
        version = versions.version_dir(state, vid)
    predictor = Predictor(folder, file, version=version)
    split = load_scored(data, predictor.size, predictor.labels, every=False, strict=strict)
    x, y = split.numpy()
    if predictor.is_face and split.names is not None:
        # photos at their own size: squeezed to one input size, a 640x480 frame would stretch the face, and the
        # landmark features remove position, roll and scale, not a stretch
        root = Path(str(data).split("?", 1)[0])
        files = [p if Path(p).is_file() else root / p for p in split.names]
        probs = metrics.as_class_probs(np.stack([predictor.run_image(predictor.load(p)) for p in files]))
    else:
        probs = class_probs(predictor, x)
    # a hand-sign export's last column is "no_hand": a class no image has, so each such answer is wrong
    report = metrics.classification_report(y, probs, predictor.answers)
    report["tta"] = False
    if predictor.is_face:
        report["no_face"] = int(np.sum(probs.argmax(1) == len(predictor.labels)))
    if predictor.is_hands:
        report["no_hand"] = int(np.sum(probs.argmax(1) == len(predictor.labels)))
    if len(predictor.labels) == 2:
        table = set(metrics.THRESHOLDS)
        if predictor.threshold is not None:  # a sigmoid file: the door opens at this threshold
            report["threshold"] = predictor.threshold
            table.add(predictor.threshold)
        report["thresholds"] = metrics.threshold_table(probs[:, 1], np.asarray(y) == 1, sorted(table))
    report.update(data=data, split=split.name, fingerprint=split.fingerprint, export=str(folder),
                  file=predictor.file, version=predictor.version["id"] if predictor.version else None)
    if out:
        _write_json(Path(out) / METRICS, report)
    return report


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
