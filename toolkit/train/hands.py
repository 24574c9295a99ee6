"""``toolkit finetune hands``: hand landmarks as the base, a cross-validated head on their features.

The palm detector and the landmark model (the mediapipe wheel's files, as ONNX; :mod:`toolkit.models.hands`)
run once over each split through the feature cache (:mod:`toolkit.train.features`); the entry is keyed by both
models' sha256, the feature version, the upscaling and the split's data fingerprint, and holds beside the
features a ``found`` mask: which images had a hand. The entry holds the full vector (points + angles,
:mod:`toolkit.inference.handfeatures`) in the run's orientation (upright, or kept with ``--keep-orientation``);
the cross-validation chooses whether the head reads the points alone (the first 63 columns) or both, with its
L2 strength. The head (standardiser + logistic regression, :mod:`toolkit.train.cvhead`) is fitted on the
found images only; every figure counts an image without a hand
as a wrong answer, and the run's metrics list those images by name.

The run folder is like any cached-feature run's, but ``model.keras`` is the head alone (63 or 93 features in);
``config.json["hands"]`` names the models and the features the head reads (``features``: version, set,
orientation), and ``toolkit export`` chains them (:mod:`toolkit.export.hands`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.inference.handpipe import NO_HAND, TURNS, ZOOM_OUT, hand_features, with_no_hand

log = logging.getLogger("toolkit.finetune")
BASE = "hands"  # the --model name of this base
HEAD_EPS = 1e-3  # the standardiser's variance floor (as the cv head's BatchNormalization)
CHUNK = 32  # images decoded at once while tracking: memory stays bounded on large splits


@dataclass
class HandFeatures:
    """One split through the tracker: features (N, 93) (zeros where no hand), labels, the found mask, names."""

    key: str
    x: np.ndarray
    y: np.ndarray
    found: np.ndarray  # (N,) bool
    names: list  # one name per image (class/file for files, split#index in memory)
    hit: bool

    @property
    def missing(self) -> list[str]:
        """Names of the images without a hand."""
        return [n for n, f in zip(self.names, self.found, strict=True) if not f]


def models_key(models, tracker=None) -> str:
    """What the features depend on besides the data: both models' sha256, the feature computation's version and
    (when not onnxruntime) the runtime that ran them (``tracker``'s sessions: :mod:`toolkit.inference.litert`)."""
    from toolkit.inference.handfeatures import FEATURE_VERSION

    fields = {role: model_sha256(models, role) for role in ("palm", "landmark")}
    fields["features"] = FEATURE_VERSION
    runtime = getattr(getattr(tracker, "palm", None), "runtime", "onnxruntime")
    if runtime != "onnxruntime":  # onnxruntime's features keep the keys they had before LiteRT
        fields["runtime"] = runtime
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def model_sha256(models, role: str) -> str:
    """The sha256 of the ``role`` ("palm" or "landmark") model: from the models' record, else read off the file."""
    path = getattr(models, role)
    sums = getattr(models, "sha256", {}) or {}
    known = sums.get(role) or sums.get(Path(path).name)
    if known:
        return known
    from toolkit.inference.manifest import sha256_file

    return sha256_file(path)


def split_names(split) -> list[str]:
    """A readable name per image: class folder/file name for files, ``split#i`` for in-memory data."""
    if split.names is not None:
        return [f"{Path(p).parent.name}/{Path(p).name}" for p in split.names]
    return [f"{split.name}#{i}" for i in range(len(split))]


def landmark_features(tracker, split, *, key_base: str, min_side: int, zoom_out: float = ZOOM_OUT,
                      orientation: str = "upright", root: Path | None = None, turns: tuple = TURNS) -> HandFeatures:
    """``split``'s full hand features (points + angles, ``orientation``) from the cache, tracking every image
    first if the entry is absent. A head reads its set's first columns (:func:`head_columns`). ``turns``: the
    palm detector's turned looks (:func:`~toolkit.inference.handpipe.hand_features`), part of the cache key."""
    from toolkit.inference.handfeatures import FULL, FeatureSpec
    from toolkit.train import features as F

    spec = FeatureSpec(FULL, orientation)
    root = Path(root) if root is not None else F.cache_root()
    looks = f"zoom_out={zoom_out:g}" + "".join(f",turn={d:g}" for d in turns)
    key = F.feature_key(key_base, f"hands/min_side={min_side}/{looks}/{spec.set}/{orientation}",
                        split.image_size, split.fingerprint)
    entry = root / key
    names = split_names(split)
    cached = F.open_entry(entry, key, len(split))
    if cached is not None and (entry / "found.npy").is_file():
        found = np.load(entry / "found.npy").astype(bool)
        log.info("%s hand features (%d images): from the cache %s", split.name, len(split), key[:12])
        return HandFeatures(key, np.asarray(cached.x), np.asarray(cached.y), found, names, True)
    tracked = {}

    def fill(tmp: Path) -> dict:
        t0 = time.perf_counter()
        tracked["x"], tracked["found"] = x, found = track_split(tracker, split, min_side, zoom_out, spec, turns)
        np.save(tmp / "features.npy", x)
        np.save(tmp / "labels.npy", split.y.astype(np.int64))
        np.save(tmp / "found.npy", found)
        return {"key": key, "layer": "hands", "split": split.name, "n": len(split), "dim": int(x.shape[1]),
                "image_size": list(split.image_size), "fingerprint": split.fingerprint, "base": key_base,
                "model": BASE, "features": spec.record(), "no_hand": int((~found).sum()),
                "seconds": time.perf_counter() - t0,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}

    meta = F.store_entry(root, key, fill)
    x, found = tracked["x"], tracked["found"]
    log.info("%s hand features (%d images): tracked in %.1f s, no hand in %d", split.name, len(split),
             meta["seconds"], meta["no_hand"])
    return HandFeatures(key, x, split.y.astype(np.int64), found, names, False)


def track_split(tracker, split, min_side: int, zoom_out: float = ZOOM_OUT, spec=None,
                turns: tuple = TURNS) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(features (N, spec.dim) float32, zero rows where no hand was found; found (N,) bool), CHUNK images at a time."""
    rows, found = [], np.zeros(len(split), bool)
    for start in range(0, len(split), CHUNK):
        images = split.subset(np.arange(start, min(start + CHUNK, len(split)))).numpy()[0]
        for i, image in enumerate(images):
            x, _ = hand_features(tracker, image, min_side, zoom_out, spec, turns=turns)
            found[start + i] = x is not None
            rows.append(x)
    dim = next((len(r) for r in rows if r is not None), spec.dim if spec is not None else 63)
    out = np.zeros((len(split), dim), np.float32)
    for i, r in enumerate(rows):
        if r is not None:
            out[i] = r
    return out, found


def feature_candidates(x: np.ndarray) -> dict[str, np.ndarray]:
    """The feature sets a head may read, as column prefixes of the full cached vector: the cv head's candidates."""
    from toolkit.inference.handfeatures import SETS

    return {name: x[:, :dim] for name, dim in SETS.items() if dim <= x.shape[1]}


def head_columns(x: np.ndarray, spec) -> np.ndarray:
    """The columns of the full cached features that a head on ``spec`` (a FeatureSpec) reads."""
    if x.shape[1] < spec.dim:
        raise ToolkitError(f"hand features: {x.shape[1]} columns cached, the head reads {spec.dim}; a bug")
    return x[:, :spec.dim]


def no_hand_record(parts: dict[str, HandFeatures], labels: tuple) -> dict:
    """Per split: how many images had no hand, per class, and which (the data report's section)."""
    out = {}
    for name, f in parts.items():
        per_class = {lab: int(((f.y == i) & ~f.found).sum()) for i, lab in enumerate(labels)}
        out[name] = {"n": int(len(f.y)), "no_hand": int((~f.found).sum()), "per_class": per_class,
                     "files": f.missing}
    return out


def head_model(dim: int, classes: int, eps: float = HEAD_EPS):
    """features (dim,) -> BatchNormalization (the standardiser) -> Dense (the logistic regression)."""
    from toolkit._keras import keras
    from toolkit.models.layers import classifier

    k = keras()
    inp = k.Input(shape=(dim,), name="features")
    x = k.layers.BatchNormalization(epsilon=eps, name="standardise")(inp)
    return k.Model(inp, classifier(classes, "fc")(x), name="hands_head")


def report(probs_found: np.ndarray, f: HandFeatures, labels: tuple) -> dict:
    """Test figures over ALL images: a no-hand image is a wrong answer (predicted "no_hand", a class of its own)."""
    from toolkit import metrics

    rows = with_no_hand(metrics.as_class_probs(probs_found) if len(probs_found) else
                        np.zeros((0, len(labels))), f.found)
    out = metrics.classification_report(f.y, rows, (*labels, NO_HAND))
    out["accuracy_found"] = float((rows[f.found].argmax(1) == f.y[f.found]).mean()) if f.found.any() else None
    out["no_hand"] = int((~f.found).sum())
    return out


def finetune_hands(config, data=None):
    """Track hands in ``config.data`` once (cached), cross-validate and fit the head, write the run folder.

    Raises:
        ToolkitError: a setting this base cannot use, a run folder in the way, or too few hands per class.
    """
    from toolkit._keras import predict_array
    from toolkit.inference.handfeatures import FeatureSpec
    from toolkit.inference.handpipe import open_tracker
    from toolkit.models.hands import ensure_hand_models
    from toolkit.train import fit, runs
    from toolkit.train.cvhead import (
        CV_FILE,
        MAX_DP,
        OOF_FILE,
        cross_validate,
        fit_head,
        one_blas_thread,
        set_head_weights,
        write_oof,
    )

    if config.head == "keras" or config.freeze != "all" or config.unfreeze_at is not None or config.augment:
        raise ToolkitError("hands: the base is fixed (landmarks) and the head is chosen by cross-validation; drop "
                           "--head keras, --freeze, --unfreeze-at and --augment")
    if config.feature_layers or len(config.workers) > 1:
        raise ToolkitError("hands: no --feature-layer (the features are the 21 points) and no multiworker run")
    out = fit.check_run_dir(config)
    if config.resume and fit.is_finished(out):
        return runs.load_run(out)
    wheel = config.weights if config.weights and config.weights.endswith(".whl") else None
    models = ensure_hand_models(wheel)
    size = config.image_size or 256  # small photos (sign_digits: 100x100) are upscaled: the detector needs it
    ds, splits = fit.load_splits(config, size, data)
    labels = tuple(ds.labels)
    min_side = min(splits.train.image_size)
    # the door's runtime (LiteRT on the .tflite files when installed): features as the door will compute them
    tracker = open_tracker(models.palm, models.landmark, threads=1, twins=getattr(models, "twins", None) or None)
    key_base = models_key(models, tracker)
    orientation = "kept" if config.keep_orientation else "upright"
    parts = {s.name: landmark_features(tracker, s, key_base=key_base, min_side=min_side, orientation=orientation)
             for s in (splits.train, splits.val, splits.test) if len(s)}
    fitting = [parts[s.name] for s in (splits.train, splits.val) if len(s)]
    groups_all = np.concatenate([s.groups for s in (splits.train, splits.val) if len(s)])
    found = np.concatenate([f.found for f in fitting])
    x = np.concatenate([f.x for f in fitting])[found]
    y = np.concatenate([f.y for f in fitting])[found]
    missing = no_hand_record(parts, labels)
    for name, rec in missing.items():
        log.info("%s split: no hand found in %d of %d images%s", name, rec["no_hand"], rec["n"],
                 f" ({', '.join(rec['files'][:5])}{', ...' if rec['no_hand'] > 5 else ''})" if rec["no_hand"] else "")
    if not len(y):
        raise ToolkitError(f"{config.data}: no hand found in any training image; are these photos of hands?")
    result = cross_validate(feature_candidates(x), y, groups_all[found], folds=config.cv_folds, seed=config.seed,
                            eps=HEAD_EPS)
    spec = FeatureSpec(result.layer, orientation)
    x = head_columns(x, spec)
    summary = result.summary(len(y))
    correct = float(np.sum(result.oof.argmax(1) == y))
    summary.update(n_with_no_hand=int(len(found)), accuracy_with_no_hand=correct / len(found))
    log.info("cross-validated accuracy %.3f ± %.3f over %d images with a hand (%.3f counting the %d without as "
             "wrong); features %s (%s), C %g", summary["accuracy_mean"], summary["accuracy_std"], len(y),
             summary["accuracy_with_no_hand"], int((~found).sum()), spec.set, orientation, result.c)
    with one_blas_thread():
        final = fit_head(x, y, result.c, HEAD_EPS, config.seed)
    head = head_model(x.shape[1], len(labels))
    set_head_weights(head, final)
    sample = x[:256]
    want = final.predict_proba(sample)
    dp = float(np.abs(predict_array(head, sample, 256).reshape(len(sample), -1)
                      - (want[:, 1:] if want.shape[1] == 2 else want)).max())
    if dp > MAX_DP:
        raise ToolkitError(f"the Keras head differs from the fitted logistic regression by {dp:.2e}; a bug")
    out.mkdir(parents=True, exist_ok=True)
    hands = {"palm_sha256": model_sha256(models, "palm"), "landmark_sha256": model_sha256(models, "landmark"),
             "source": getattr(models, "source", ""), "min_side": min_side, "zoom_out": ZOOM_OUT,
             "turns": list(TURNS),
             "feature_key": key_base, "features": spec.record(),
             "feature_version": _feature_version(), "no_hand": missing}
    record = fit.run_record(config.train_settings({}), ds, splits, head, finetune=config.to_dict(),
                            weights={"source": hands["source"], "layers_loaded": 0}, frozen_layers=0,
                            head=summary, hands=hands)
    runs.write_json_atomic(out / runs.CONFIG, record)
    fit.save_model_atomic(head, out / runs.MODEL)
    write_oof(out / OOF_FILE, result, y, groups_all[found])
    runs.write_json_atomic(out / CV_FILE, {**summary, "max_abs_dprob_keras": dp, "grid": result.grid})
    if "test" in parts:
        f = parts["test"]
        probs = predict_array(head, head_columns(f.x, spec)[f.found], 256) if f.found.any() else np.zeros((0, 1))
        metrics_record = report(probs, f, labels)
        metrics_record.update(data=config.data, split="test", fingerprint=splits.test.fingerprint, cv=summary,
                              no_hand_files=f.missing)
        runs.write_json_atomic(out / runs.METRICS, metrics_record)
        log.info("test accuracy %.3f on %d images (no hand, counted wrong: %d)", metrics_record["accuracy"],
                 len(f.y), metrics_record["no_hand"])
    return runs.load_run(out)


def _feature_version():
    from toolkit.inference.handfeatures import FEATURE_VERSION

    return FEATURE_VERSION
