"""Build and export a face-landmark smile model: detector + face mesh + expression CNN + head, chained.

``toolkit face-model --data PHOTOS --out exported/happy``: photos -> features (clean + degraded copies, cached;
:mod:`toolkit.train.facemesh`) -> the head chosen by grouped CV -> the threshold on the out-of-fold scores of the
degraded copies at ``--target-far`` -> an export folder, validated end to end by the door's own
:class:`~toolkit.inference.predictor.Predictor` on the held-out photos against the float pipeline (the same
features through the numpy head). The manifest records the blocks the head reads, the head's standardiser and
coefficients (unfolded, for a refit on the door), the sources, sha256s and licences of the three base files,
and the test split's figures clean and through each camera degradation.

The folder is written and checked by :mod:`toolkit.export.facechain`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.export.config import FaceModelConfig

__all__ = ["FaceModelConfig", "build_face_model", "figures"]


def figures(p: np.ndarray, y: np.ndarray, found: np.ndarray, threshold: float) -> dict:
    """AUC, accuracy and FAR/FRR at ``threshold``; a photo without a face scores 0 (never opens; counted wrong)."""
    from toolkit.export.validate import threshold_at

    p = np.where(found, p, 0.0)
    at = threshold_at(threshold, p, y)
    right = np.where(found, (p >= threshold) == (y == 1), False)
    return {"n": int(len(y)), "no_face": int((~found).sum()), "auc": round(auc(p, y), 4),
            "accuracy": round(100 * float(right.mean()), 2), **at}  # fmt: skip


def auc(score: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney AUC, ties counted half."""
    from scipy.stats import rankdata

    r, pos = rankdata(score), np.asarray(y) == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)) if n1 and n0 else float("nan")


def build_face_model(config: FaceModelConfig, log: Callable[[str], None] = print) -> Path:
    """Features, head, threshold, export folder (validated end to end); returns the folder.

    Raises:
        ToolkitError: unreadable data, too few faces, a failed validation (nothing written).
    """
    from toolkit.data import load_data
    from toolkit.export.publish import _check_out
    from toolkit.images import decode_image
    from toolkit.inference.detect import FaceDetector
    from toolkit.inference.facepipe import TILES, FacePipeline
    from toolkit.models.expression import ensure_expression_base
    from toolkit.models.facemesh import ensure_face_mesh
    from toolkit.train.facemesh import features_key, fit_face_head, photo_features

    out = Path(config.out)
    _check_out(out, config.overwrite)
    ds = load_data(config.data, (64, 64))
    splits = ds.split(seed=config.seed, val=0.0, test=config.test)
    train, test = splits.train, splits.test
    if train.names is None or not len(test):
        raise ToolkitError(f"{config.data}: give an image folder with enough photos to hold {config.test:.0%} out")
    labels = tuple(ds.labels) if hasattr(ds, "labels") else ("no_smile", "smile")
    if len(labels) != 2:
        raise ToolkitError(f"{config.data}: a door model has 2 classes (no_smile, smile), got {labels}")
    models = ensure_face_mesh()
    expression = ensure_expression_base()
    twins = models.twins  # the door's runtime (LiteRT on the .tflite files when installed): no train/serve skew
    pipeline = FacePipeline(FaceDetector(models.detector, tiles=TILES, twin=twins.get("detector")), models.landmark,
                            expression, twin=twins.get("landmark"))  # fmt: skip
    sums = {"landmark": models.sha256[models.landmark.name], "detector": models.sha256[models.detector.name],
            "expression": _sha(expression), "tiles": TILES}
    runtimes = pipeline.runtimes()
    if set(runtimes.values()) != {"onnxruntime"}:  # onnxruntime's features keep their old keys
        sums["runtimes"] = runtimes
    take = np.arange(len(train))
    if len(take) > config.cv_max_images:
        take = np.sort(np.random.default_rng(config.seed).permutation(len(take))[: config.cv_max_images])
    names = [resolve(config.data, train.names[i]) for i in take]
    _, ytr = train.numpy()
    ytr = np.asarray(ytr)[take]
    images = [decode_image(p, None) for p in names]
    key = features_key(sums, _fingerprint(names))
    log(f"face features: {len(images)} training photos x (clean + {', '.join(config.augment) or 'no copies'})")
    sets = [photo_features(pipeline, images, ytr, v, config.seed, key) for v in ("clean", *config.augment)]
    head = fit_face_head(sets, blocks=config.blocks, folds=config.folds, seed=config.seed, cs=config.cs or None)
    log(f"  chosen: {'+'.join(head.blocks)} (C {head.c:g})")
    from toolkit.export.validate import choose_threshold

    scores, ys, source = head.threshold_rows()
    threshold = {**choose_threshold(scores, ys, config.target_far), "source": source, "folds": head.folds,
                 "n": int(len(ys))}
    test_names = [resolve(config.data, n) for n in test.names]
    _, yte = test.numpy()
    yte = np.asarray(yte)
    test_images = [decode_image(p, None) for p in test_names]
    tkey = features_key(sums, _fingerprint(test_names))
    from toolkit.train.facemesh import stack

    figs = {}
    for v in ("clean", *config.augment):
        s = photo_features(pipeline, test_images, yte, v, config.seed + 1, tkey)
        figs[v] = figures(head.predict(stack(s, head.blocks)), yte, s.found, threshold["threshold"])
        log(f"  test {v:9s}: AUC {figs[v]['auc']:.3f}, accuracy {figs[v]['accuracy']:.1f} %, FAR "
            f"{100 * figs[v]['far']:.1f} %, FRR {100 * figs[v]['frr']:.1f} % (no face {figs[v]['no_face']})")
    clean = photo_features(pipeline, test_images, yte, "clean", config.seed + 1, tkey)
    from toolkit.export.manifest import spec_name  # a manifest names its data, never a path on this machine

    name = spec_name(config.data)
    data = {"spec": name, "kind": "photos", "trained_on": {"spec": name, "kind": "photos",
            "photos": len(images), "copies": list(config.augment)}, "validation_split": "test",
            "validation_fingerprint": test.fingerprint, "fingerprints": splits.fingerprints(),
            "threshold": threshold, "test_figures": figs,
            "test_figures_note": "held-out photos clean and through each camera degradation (one at a time, full "
                                 "strength): what a different camera may do; a photo without a face scores 0"}
    from toolkit.export.facechain import write_face_export

    return write_face_export(out, head=head, labels=labels, models=models, expression=expression, data=data,
                             threshold=threshold, clean=clean, test_images=test_images, y=yte, config=config,
                             log=log)


def resolve(spec: str, name: str) -> str:
    """A split's item name as a file path: names of in-memory folder splits are relative to the folder."""
    if Path(name).is_file():
        return str(name)
    return str(Path(str(spec).split("?", 1)[0]) / name)


def _sha(path: Path) -> str:
    from toolkit.inference.manifest import sha256_file

    return sha256_file(path)


def _fingerprint(names: list) -> str:
    import hashlib

    h = hashlib.sha256()
    for n in names:
        st = os.stat(n)
        h.update(f"{n}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    return h.hexdigest()


