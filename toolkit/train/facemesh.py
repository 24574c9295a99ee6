"""A smile head on face landmarks and expression features, chosen by grouped cross-validation.

Each photo goes once through the door's own face pipeline (:class:`toolkit.inference.facepipe.FacePipeline`:
BlazeFace -> face mesh -> landmark features + the aligned crop -> expression features), clean and through each
camera degradation of ``augment`` (:mod:`toolkit.degrade`, one at a time, full strength, seeded per photo); the
features are cached by (photo files' fingerprint, variant, the models' sha256s, the feature version). Copies
share their photo's group, so a photo and its copies never straddle a fold, and they do not count toward
``cv_max_images`` (which caps photos).

Candidates: ``expression``, ``landmarks`` and ``fused`` (both blocks side by side; every column standardised)
are each cross-validated (:func:`toolkit.train.cvhead.cross_validate`, C on its grid) and their estimates
logged; ``blocks="auto"`` takes the best, or the caller names one (the committed door model's blocks were chosen
on the camera-shift benchmark, ``benchmarks/face_shift.py``). The threshold is chosen on the out-of-fold scores
of the degraded copies at the target FAR when there are copies (a threshold that survives a new camera), else on
the clean ones. The head is stored unfolded: mean, variance, eps, coefficients and intercept, so the door can
refit it with numpy.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import numpy as np

from toolkit.errors import ToolkitError

log = logging.getLogger("toolkit.finetune")
CANDIDATES = {"expression": ("expression",), "landmarks": ("landmarks",), "fused": ("expression", "landmarks")}
EPS = 1e-3  # the standardiser's variance floor, as the cv head's


@dataclass
class FaceSet:
    """Photos through one variant: blocks (N, D) (zeros where no face), found mask, labels, photo ids."""

    blocks: dict
    found: np.ndarray
    y: np.ndarray
    group: np.ndarray
    variant: str


@dataclass
class FaceHead:
    """The chosen head, unfolded: z = (x - mean) / sqrt(var + eps); P(positive) = sigmoid(z @ coef + intercept)."""

    blocks: tuple
    mean: np.ndarray
    var: np.ndarray
    eps: float
    coef: np.ndarray  # (D,)
    intercept: float
    c: float
    oof: np.ndarray  # out-of-fold P(positive) of every training row (clean photos and copies)
    oof_y: np.ndarray
    oof_degraded: np.ndarray  # which rows are degraded copies
    folds: int
    candidates: dict = field(default_factory=dict)  # name -> CV estimate (accuracy mean, std, C, log loss)

    def threshold_rows(self) -> tuple[np.ndarray, np.ndarray, str]:
        """(scores, labels, what they are) the threshold is chosen on: the degraded copies' out-of-fold scores
        when there are copies, else the clean photos'."""
        use = self.oof_degraded if self.oof_degraded.any() else ~self.oof_degraded
        what = "degraded copies" if self.oof_degraded.any() else "clean photos"
        return self.oof[use], self.oof_y[use], f"out-of-fold cross-validation scores of the {what}"

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self.mean) / np.sqrt(self.var + self.eps)
        return 1.0 / (1.0 + np.exp(-(z @ self.coef + self.intercept)))


def stack(s: FaceSet, blocks: tuple) -> np.ndarray:
    return np.concatenate([s.blocks[b] for b in blocks], axis=1)


def photo_features(pipeline, images, y, variant: str, seed: int, key: str, log_every: int = 500) -> FaceSet:
    """Every image (HxWx3 uint8, any size) through ``variant`` ("clean" or a degradation) and the pipeline,
    cached under ``key`` (what the features depend on besides the variant)."""
    from toolkit.degrade import DEGRADATIONS, degrade_image
    from toolkit.inference.cache import features_root

    path = features_root() / "facemesh" / f"{hashlib.sha256(f'{key}/{variant}/{seed}'.encode()).hexdigest()[:24]}.npz"
    y = np.asarray(y)
    if path.is_file():
        with np.load(path) as z:
            blocks = {b: z[b] for b in z.files if b != "found"}
            return FaceSet(blocks, z["found"], y, np.arange(len(y)), variant)
    blocks = {b: None for b in pipeline.blocks}
    found = np.zeros(len(images), bool)
    for i, image in enumerate(images):
        if variant != "clean":
            rng = np.random.default_rng([seed, i, DEGRADATIONS.index(variant)])
            image = degrade_image(np.asarray(image, np.uint8), (variant,), rng)
        got = pipeline(image)
        if got is not None:
            for b, v in got.blocks.items():
                if blocks[b] is None:
                    blocks[b] = np.zeros((len(images), v.size), np.float32)
                blocks[b][i] = v
            found[i] = True
        if log_every and (i + 1) % log_every == 0:
            log.info("face features (%s): %d/%d", variant, i + 1, len(images))
    blocks = {b: (v if v is not None else np.zeros((len(images), 1), np.float32)) for b, v in blocks.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "wb") as f:
        np.savez(f, found=found, **blocks)
    tmp.replace(path)
    return FaceSet(blocks, found, y, np.arange(len(y)), variant)


def features_key(models: dict, fingerprint: str) -> str:
    from toolkit.inference.facemesh import FEATURE_VERSION

    return hashlib.sha256(json.dumps({**models, "features": FEATURE_VERSION, "data": fingerprint},
                                     sort_keys=True).encode()).hexdigest()  # fmt: skip


def training_rows(sets: list[FaceSet], blocks: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, group, degraded) over the found faces of every set (the clean one and its copies)."""
    x = np.concatenate([stack(s, blocks)[s.found] for s in sets])
    y = np.concatenate([s.y[s.found] for s in sets])
    group = np.concatenate([s.group[s.found] for s in sets])
    degraded = np.concatenate([np.full(int(s.found.sum()), s.variant != "clean") for s in sets])
    return x, y, group, degraded


def fit_face_head(sets: list[FaceSet], *, blocks: str = "auto", folds: int = 5, seed: int = 0,
                  cs: tuple | None = None) -> FaceHead:
    """Cross-validate the candidates, fit the chosen one on every row; keep its out-of-fold scores.

    Args:
        sets: the clean training photos first, then their degraded copies (same photo ids).
        blocks: "auto" (best CV accuracy), or one of :data:`CANDIDATES`.
        cs: the C values tried (default: the cv head's grid); thousands of rows x 3,452 fused features make
            each fit slow, and a shorter grid is the way to pay for fewer.

    Raises:
        ToolkitError: an unknown ``blocks``, or too few faces per class.
    """
    from toolkit.train.cvhead import cross_validate, fit_head, one_blas_thread

    if blocks != "auto" and blocks not in CANDIDATES:
        raise ToolkitError(f"--blocks {blocks!r}: choose auto, {', '.join(CANDIDATES)}")
    names = list(CANDIDATES) if blocks == "auto" else [blocks]
    results = {}
    for name in names:
        x, y, group, degraded = training_rows(sets, CANDIDATES[name])
        res = cross_validate({name: x}, y, group, folds=folds, seed=seed, **({"cs": tuple(cs)} if cs else {}))
        acc = np.asarray(res.accuracies)
        results[name] = (res, degraded, y)
        log.info("candidate %-10s CV accuracy %.1f ± %.1f %% (C %g, %d rows, %d features)", name, 100 * acc.mean(),
                 100 * acc.std(), res.c, len(y), x.shape[1])
    best = max(names, key=lambda n: (round(float(np.mean(results[n][0].accuracies)), 9), -results[n][0].log_loss))
    res, degraded, y = results[best]
    x, y, _, _ = training_rows(sets, CANDIDATES[best])
    with one_blas_thread():
        fit = fit_head(x, y, res.c, EPS, seed)
    coef = np.asarray(fit.coef, np.float64).reshape(-1)
    candidates = {n: {"accuracy_mean": float(np.mean(r.accuracies)), "accuracy_std": float(np.std(r.accuracies)),
                      "C": r.c, "log_loss": r.log_loss} for n, (r, _, _) in results.items()}  # fmt: skip
    return FaceHead(CANDIDATES[best], fit.mean, fit.var, fit.eps, coef, float(np.ravel(fit.model.intercept_)[0]),
                    res.c, res.oof[:, 1], y, degraded, res.folds, candidates)
