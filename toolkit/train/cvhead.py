"""The few-shot head: logistic regression on cached features, its layer and L2 strength chosen by k-fold CV.

With a few hundred images a 15 % validation split (15-30 images) decides the Keras head's best epoch, and
export then picks the door threshold on as few again: both by luck. Here every train+val image is scored
once by a head that never saw it:

1. each candidate feature layer's features are cached (train, val and test; the base runs once, ever);
2. folds: stratified k-fold over train+val, GROUPED by the loader's group ids (byte-identical copies share
   one; augmented copies of a photo must carry their photo's id), so no photo is on both sides of a fold;
3. inside each fold the features are standardised with the training part's mean and variance and an
   L2-regularised logistic regression is fitted for each C of :data:`C_GRID` (in the span of the training
   rows when there are fewer images than features: the same optimum, much faster; see :func:`fit_head`);
4. the (layer, C) with the best mean fold accuracy wins (ties: lower out-of-fold log loss, then the
   smaller C, the simpler head); its accuracy mean ± std over the folds is logged before the final fit and
   recorded (metrics.json, config.json, cv.json), and its out-of-fold probabilities go to ``oof.npz``, on
   which export chooses the door threshold;
5. the winner is refitted on all of train+val and written into ONE flat Keras model: the base cut at the
   layer -> (Flatten) -> BatchNormalization holding the mean and variance -> Dense (sigmoid for 2 classes,
   softmax otherwise) holding the coefficients. The test split stays untouched for the final figure.

The estimate is a little optimistic: it is the best of len(layers) x len(C_GRID) candidates scored on the
same folds. With a handful of candidates the bias is small next to the fold-to-fold spread it is shown with.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError

log = logging.getLogger("toolkit.finetune")
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # inverse L2 strength on standardised features
OOF_FILE = "oof.npz"  # out-of-fold probabilities, labels, groups and folds of every train+val image
CV_FILE = "cv.json"  # every candidate's fold accuracies
MAX_DP = 1e-4  # the Keras head must reproduce scikit-learn's probabilities; beyond this it is a bug


def choose_head(head: str, n_images: int, max_images: int, n_layers: int) -> str:
    """--head auto -> "cv" for at most ``max_images`` train+val images or several candidate layers, else "keras"."""
    if head != "auto":
        return head
    return "cv" if n_images <= max_images or n_layers > 1 else "keras"


@dataclass
class HeadFit:
    """A standardiser and a logistic regression fitted on features: what the Keras head layers hold."""

    mean: np.ndarray  # (D,) float64
    var: np.ndarray  # (D,) float64; features are divided by sqrt(var + eps), as BatchNormalization does
    eps: float
    basis: np.ndarray | None  # (r, D) orthonormal rows spanning the training features, or None (fitted in D)
    model: object = None  # the fitted sklearn LogisticRegression (on the features projected onto ``basis``)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.mean) / np.sqrt(self.var + self.eps)

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """What the sklearn model takes: standardised features, projected onto ``basis`` when there is one."""
        z = self.standardise(x)
        return z if self.basis is None else z @ self.basis.T

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, classes) probabilities, scikit-learn's own."""
        return self.model.predict_proba(self.inputs(x))

    @property
    def coef(self) -> np.ndarray:
        """(classes or 1, D) weights on the standardised features."""
        return self.model.coef_ if self.basis is None else self.model.coef_ @ self.basis


def fit_head(x: np.ndarray, y: np.ndarray, c: float, eps: float = 1e-3, seed: int = 0,
             like: HeadFit | None = None) -> HeadFit:
    """Standardise ``x`` with its own mean and variance and fit an L2 logistic regression with strength ``c``.

    With fewer images than features (a flattened feature map: 32,768 values for 111 photos) the L2 solution
    lies in the span of the training rows (the representer theorem), so the regression is fitted on the
    rows' coordinates in an orthonormal basis of that span: the same optimum, found in n dimensions, not D.
    ``like``: an earlier fit on the same ``x`` whose standardiser and basis are reused (a grid over C).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(x, np.float64)
    if like is not None:
        fit = HeadFit(like.mean, like.var, like.eps, like.basis)
    else:
        fit = HeadFit(x.mean(axis=0), x.var(axis=0), eps, None)
    z = fit.standardise(x)
    if like is None and z.shape[0] < z.shape[1]:
        # The basis from the n x n Gram matrix: its eigenvectors give the rows' singular directions, at a
        # tenth of the cost of an SVD of the n x D matrix. Directions without variance are left out.
        w, u = np.linalg.eigh(z @ z.T)
        keep = w > max(w.max(), 1e-300) * 1e-9
        fit.basis = (u[:, keep].T @ z) / np.sqrt(w[keep])[:, None] if keep.any() else np.eye(1, z.shape[1])
    if fit.basis is not None:
        z = z @ fit.basis.T
    with warnings.catch_warnings():  # weak regularisation on separable features never fully converges; harmless
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit.model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(z, y)
    return fit


def make_folds(y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number per item: stratified by class, items of one group always in the same fold.

    Raises:
        ToolkitError: a class with fewer than 2 groups (cross-validation needs one on each side).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y, groups = np.asarray(y), np.asarray(groups)
    per_class = {int(c): len(np.unique(groups[y == c])) for c in np.unique(y)}
    k = min(folds, *per_class.values())
    if k < 2:
        poor = min(per_class, key=per_class.get)
        raise ToolkitError(f"--head cv: class {poor} has {per_class[poor]} distinct image(s) in train+val; "
                           "cross-validation needs at least 2 per class (add images or use --head keras)")
    fold = np.empty(len(y), np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, held) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        fold[held] = i
    return fold


@dataclass
class CVResult:
    """The winning candidate, its per-fold accuracies and out-of-fold probabilities, and the whole grid."""

    layer: str
    c: float
    fold: np.ndarray  # fold number per item
    accuracies: list  # accuracy of each fold
    oof: np.ndarray  # (N, classes) probabilities from the fold that held each item out
    log_loss: float
    grid: list = field(default_factory=list)  # one row per (layer, C)

    @property
    def folds(self) -> int:
        return int(self.fold.max()) + 1

    def summary(self, n: int) -> dict:
        acc = np.asarray(self.accuracies)
        return {"head": "cv", "layer": self.layer, "C": self.c, "folds": self.folds, "n": n,
                "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
                "fold_accuracies": [float(a) for a in acc], "log_loss": self.log_loss}


def cross_validate(features: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray, *, folds: int = 5,
                   seed: int = 0, cs: tuple = C_GRID, eps: float = 1e-3) -> CVResult:
    """Score every (layer, C) by grouped, stratified k-fold CV on the same folds; returns the best.

    Args:
        features: candidate layer name -> (N, D) features of the same N items.
        y: (N,) integer labels; groups: (N,) group ids (items of one group never straddle a fold).
        folds: at most this many folds (fewer when a class has fewer groups).
        seed: the folds' shuffle; cs: the C values tried; eps: added to the variance when standardising.
    """
    with one_blas_thread():
        return _cross_validate(features, np.asarray(y, np.int64), make_folds(y, groups, folds, seed), cs, eps,
                               seed)


def one_blas_thread():
    """BLAS on one thread: these products are small, and OpenBLAS' threads on a busy 2-core machine made
    each one ~100x slower (0.67 s instead of 5 ms for 23 x 32,768 by 32,768 x 88)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def _cross_validate(features: dict, y: np.ndarray, fold: np.ndarray, cs: tuple, eps: float, seed: int) -> CVResult:
    classes = int(y.max()) + 1
    best, best_key = None, None
    grid = []
    for layer, x in features.items():
        x = np.asarray(x, np.float32)
        prepared: dict[int, HeadFit] = {}  # per fold: its standardiser and basis, shared by every C
        for c in cs:
            oof = np.zeros((len(y), classes))
            accs = []
            for f in range(int(fold.max()) + 1):
                held = fold == f
                fit = fit_head(x[~held], y[~held], c, eps, seed, like=prepared.get(f))
                prepared[f] = fit
                p = np.zeros((int(held.sum()), classes))
                p[:, fit.model.classes_] = fit.predict_proba(x[held])
                oof[held] = p
                accs.append(float(np.mean(p.argmax(axis=1) == y[held])))
            loss = float(-np.mean(np.log(np.clip(oof[np.arange(len(y)), y], 1e-15, 1.0))))
            grid.append({"layer": layer, "C": c, "accuracy_mean": float(np.mean(accs)),
                         "accuracy_std": float(np.std(accs)), "log_loss": loss})
            key = (-round(float(np.mean(accs)), 9), loss, c)
            if best_key is None or key < best_key:
                best_key, best = key, CVResult(layer, c, fold, accs, oof, loss)
    best.grid = grid
    return best


def set_head_weights(model, fit: HeadFit) -> None:
    """Write ``fit`` into the model's last two layers: BatchNormalization (standardiser) and Dense (classifier)."""
    norm, dense = model.layers[-2], model.layers[-1]
    if type(norm).__name__ != "BatchNormalization" or type(dense).__name__ != "Dense":
        raise ToolkitError(f"{model.name}: expected BatchNormalization + Dense at the end, got {norm.name}, "
                           f"{dense.name}")
    if abs(norm.epsilon - fit.eps) > 1e-12:
        raise ToolkitError(f"{norm.name}: epsilon {norm.epsilon} differs from the standardiser's {fit.eps}")
    d = len(fit.mean)
    norm.set_weights([np.ones(d, np.float32), np.zeros(d, np.float32), fit.mean.astype(np.float32),
                      fit.var.astype(np.float32)])
    coef, intercept = fit.coef, fit.model.intercept_  # (1, D) for 2 classes: P(class 1) = sigmoid
    dense.set_weights([coef.T.astype(np.float32), intercept.astype(np.float32)])


def write_oof(path: Path, result: CVResult, y: np.ndarray, groups: np.ndarray) -> None:
    """Save the out-of-fold probabilities with their labels, groups and folds (atomically)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, probs=np.asarray(result.oof, np.float64), y=np.asarray(y, np.int64),
                 groups=np.asarray(groups, np.int64), fold=result.fold, layer=result.layer, C=result.c)
    tmp.replace(path)


def read_oof(run_dir: Path | None) -> dict | None:
    """A run's out-of-fold scores {"probs", "y", "fold", "file"}, or None when it has none (a Keras head)."""
    path = None if run_dir is None else Path(run_dir) / OOF_FILE
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path) as z:
            out = {"probs": np.asarray(z["probs"]), "y": np.asarray(z["y"]), "fold": np.asarray(z["fold"])}
    except (OSError, ValueError, KeyError) as exc:
        raise ToolkitError(f"{path}: unreadable out-of-fold scores ({exc}); fine-tune the run again") from exc
    if out["probs"].ndim != 2 or len(out["probs"]) != len(out["y"]):
        raise ToolkitError(f"{path}: out-of-fold scores and labels differ in length; fine-tune the run again")
    out["file"] = path
    return out


def train_cv_head(config, model, penultimate: str, splits, labels: tuple, out: Path, dist,
                  candidates: tuple = ()):
    """Cache each candidate layer's features, cross-validate, fit on train+val, write the run folder.

    Every worker of a multiworker run computes its share of the features and the same (deterministic) fit;
    only the chief writes files.
    """
    from toolkit._keras import predict_array
    from toolkit.train import features as F
    from toolkit.train import fit as T
    from toolkit.train import runs
    from toolkit.train.plots import plot_confusion
    from toolkit.train.surgery import cut_model

    fitting = [s for s in (splits.train, splits.val) if len(s)]
    cuts, xs = {}, {}
    for layer in candidates or (penultimate,):
        cut, fed_by = cut_model(model, layer, penultimate, len(labels))
        base = F.base_model(cut, fed_by)
        h = F.base_hash(base)
        parts = {s.name: F.cache_features(base, s, weights_hash=h, layer=fed_by, dist=dist, scratch=out / "features")
                 for s in (*fitting, splits.test) if len(s)}
        cuts[layer] = (cut, fed_by, parts)
        xs[layer] = np.concatenate([np.asarray(parts[s.name].x) for s in fitting])
    y = np.concatenate([s.y for s in fitting])
    groups = np.concatenate([s.groups for s in fitting])
    eps = float(next(iter(cuts.values()))[0].layers[-2].epsilon)
    result = cross_validate(xs, y, groups, folds=config.cv_folds, seed=config.seed, eps=eps)
    summary = result.summary(len(y))
    log.info("cross-validated accuracy %.3f ± %.3f (mean ± std over %d folds of %d train+val images; layer %s, "
             "C %g); fitting the head on all %d", summary["accuracy_mean"], summary["accuracy_std"], result.folds,
             len(y), result.layer, result.c, len(y))
    with one_blas_thread():
        final = fit_head(xs[result.layer], y, result.c, eps, config.seed)
    cut, fed_by, parts = cuts[result.layer]
    set_head_weights(cut, final)
    head = F.build_head(cut, fed_by)
    sample = xs[result.layer][:256]
    dp = float(np.abs(predict_array(head, sample, 256).reshape(len(sample), -1)
                      - _as_model_output(final.predict_proba(sample))).max())
    if dp > MAX_DP:
        raise ToolkitError(f"the Keras head differs from the fitted logistic regression by {dp:.2e}; a bug")
    if not dist.is_chief:
        return T.finish_run(out, cut, splits.test, evaluate=False, dist=dist)
    T.save_model_atomic(cut, out / runs.MODEL)
    write_oof(out / OOF_FILE, result, y, groups)
    runs.write_json_atomic(out / CV_FILE, {**summary, "max_abs_dprob_keras": dp, "grid": result.grid})
    runs.write_json_atomic(out / "features.json", {"layer": fed_by, "candidates": list(cuts), "dim": xs[
        result.layer].shape[1], "keys": {n: f.key for n, f in parts.items()}})
    record = json.loads((out / runs.CONFIG).read_text())
    record.update(head=summary, params=int(cut.count_params()))
    runs.write_json_atomic(out / runs.CONFIG, record)
    if "test" in parts:  # the untouched test split, from its cached features
        report = F.evaluate_features(head, parts["test"], tuple(labels))
        report.update(data=config.data, split="test", fingerprint=splits.test.fingerprint, cv=summary)
        runs.write_json_atomic(out / runs.METRICS, report)
        plot_confusion(np.array(report["confusion"]), tuple(labels), out / "confusion.png")
    return T.finish_run(out, cut, splits.test, evaluate=False, dist=dist)


def _as_model_output(probs: np.ndarray) -> np.ndarray:
    """scikit-learn's (N, 2) probabilities as the model's one sigmoid column; softmax columns as they are."""
    return probs[:, 1:] if probs.shape[1] == 2 else probs
