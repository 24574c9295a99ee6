"""L2 logistic regression in numpy alone: the head the door refits on the Pi (no scikit-learn, no TensorFlow).

The objective is scikit-learn's ``LogisticRegression(C=c)`` (lbfgs, L2, intercept not penalised; multinomial for
more than two classes, every class's column penalised)::

    C * sum_i log_loss(x_i, y_i) + 1/2 * ||W - W0||^2

with ``W0 = 0`` that is scikit-learn's fit (a test holds the two to |dp| < 1e-3); with ``W0`` the shipped head's
coefficients the fit is pulled toward the head the camera started from instead of toward zero, so a few labelled
photos can only nudge it. It is minimised by Newton's method with a backtracking line search: a few dozen
features and a few hundred photos converge in a handful of steps to far tighter than lbfgs' default tolerance.

Features are standardised first (mean and variance of the training rows, ``eps`` added as BatchNormalization
does), as the ``--head cv`` fit does; :meth:`LinearHead.from_fit` folds the standardiser back into one kernel and
bias on the raw features, the form the head ONNX file holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-3  # added to the variance when standardising, like the cv head's BatchNormalization epsilon
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # inverse L2 strength on standardised features


@dataclass(frozen=True)
class LinearHead:
    """``probs = activation(x @ kernel + bias)`` on raw features: sigmoid with one column, else softmax.

    ``kernel`` is (D, 1) for a two-class head (P(labels[1])) and (D, K) otherwise, as the head ONNX file holds it.
    """

    kernel: np.ndarray
    bias: np.ndarray

    @property
    def sigmoid(self) -> bool:
        return self.kernel.shape[1] == 1

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64) @ self.kernel + self.bias

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The model's output: (N, 1) P(positive) for a sigmoid head, (N, K) class probabilities otherwise."""
        z = self.logits(x)
        return _sigmoid(z) if self.sigmoid else _softmax(z)

    def class_probs(self, x: np.ndarray) -> np.ndarray:
        """(N, K) class probabilities (a sigmoid head's column becomes two)."""
        p = self(x)
        return np.concatenate([1.0 - p, p], axis=1) if self.sigmoid else p

    @classmethod
    def from_fit(cls, fit: Fit) -> LinearHead:
        """Fold the standardiser into the coefficients: (x - m) / s @ W + b == x @ (W / s) + (b - (m / s) @ W)."""
        s = np.sqrt(fit.var + fit.eps)
        kernel = fit.coef.T / s[:, None]
        return cls(kernel, fit.intercept - (fit.mean / s) @ fit.coef.T)

    def to_dict(self) -> dict:
        return {"kernel": self.kernel.tolist(), "bias": self.bias.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> LinearHead:
        kernel, bias = np.asarray(d["kernel"], np.float64), np.asarray(d["bias"], np.float64).reshape(-1)
        if kernel.ndim != 2 or bias.shape != (kernel.shape[1],) or not np.all(np.isfinite(kernel)):
            raise ValueError(f"kernel {kernel.shape} and bias {bias.shape} do not make a linear head")
        return cls(kernel, bias)


@dataclass
class Fit:
    """A standardiser and the coefficients on standardised features: ``coef`` (1 or K, D), ``intercept`` (1 or K)."""

    mean: np.ndarray
    var: np.ndarray
    eps: float
    coef: np.ndarray
    intercept: np.ndarray
    iterations: int = 0

    def standardise(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.mean) / np.sqrt(self.var + self.eps)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, K) class probabilities, as scikit-learn's ``predict_proba``."""
        z = self.standardise(x) @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:
            p = _sigmoid(z)
            return np.concatenate([1.0 - p, p], axis=1)
        return _softmax(z)


def prior_coef(head: LinearHead, mean: np.ndarray, var: np.ndarray, eps: float = EPS) -> np.ndarray:
    """A head's coefficients on features standardised by (mean, var): the W0 a fit is pulled toward.

    A softmax head's columns are centred (a constant added to every class's logit changes nothing, so only the
    centred coefficients are the head's own).
    """
    coef = (head.kernel * np.sqrt(var + eps)[:, None]).T
    return coef if head.sigmoid else coef - coef.mean(axis=0, keepdims=True)


def fit_logreg(x: np.ndarray, y: np.ndarray, c: float, classes: int, *, prior: np.ndarray | None = None,
               eps: float = EPS, mean: np.ndarray | None = None, var: np.ndarray | None = None,
               max_iter: int = 100, tol: float = 1e-10, init: Fit | None = None) -> Fit:
    """Standardise ``x`` and minimise C * log loss + 1/2 ||W - prior||^2 by Newton's method.

    Args:
        x: (N, D) features; y: (N,) integer labels in 0..classes-1.
        c: inverse regularisation strength (scikit-learn's C).
        classes: 2 fits one sigmoid column (P(class 1)); more fit a softmax column per class.
        prior: (1 or K, D) coefficients on the standardised features to shrink toward (None: zero).
        mean, var: the standardiser (default: ``x``'s own).
        init: a fit to start from (the same rows at a neighbouring C: Newton then needs a step or two).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    mean = x.mean(axis=0) if mean is None else mean
    var = x.var(axis=0) if var is None else var
    z = (x - mean) / np.sqrt(var + eps)
    k = 1 if classes == 2 else classes
    w0 = np.zeros((k, z.shape[1])) if prior is None else np.asarray(prior, np.float64).reshape(k, z.shape[1])
    target = (y[:, None] == (np.arange(k) + (1 if k == 1 else 0))).astype(np.float64)  # one-hot, or y == 1
    # More features than photos (a face's landmarks and expression features, a few dozen snapshots): the loss
    # sees W only through Z W, so the optimum moves W away from the prior only within the span of the photos.
    # Newton then runs on the photos' coordinates in that span (r <= N unknowns a class, not D): the same
    # optimum, without a D x D system per step.
    basis, offset = None, np.zeros((len(z), k))
    if z.shape[1] > len(z):
        _, sv, vt = np.linalg.svd(z, full_matrices=False)
        basis = vt[sv > sv[:1] * 1e-10].T  # (D, r)
        offset = z @ w0.T  # the prior's logits
        prior0, z = w0, z @ basis
        w0 = np.zeros((k, z.shape[1]))
    zi = np.hstack([z, np.ones((len(z), 1))])  # the last coefficient of each class is its intercept
    theta = np.zeros((k, z.shape[1] + 1))
    theta[:, :-1] = w0
    if init is not None and init.coef.shape == (k, len(init.mean)) and len(init.mean) == len(mean):
        start = init.coef if basis is None else (init.coef - prior0) @ basis  # a warm start projected on the span
        theta = np.hstack([start, init.intercept[:, None]])
    d1 = z.shape[1] + 1
    pen = np.ones(d1)
    pen[-1] = 0.0  # the intercept is not penalised

    def objective(t: np.ndarray) -> float:
        logits = zi @ t.T + offset
        if k == 1:
            loss = np.sum(np.logaddexp(0.0, logits[:, 0]) - target[:, 0] * logits[:, 0])
        else:
            m = logits.max(axis=1, keepdims=True)
            lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
            loss = np.sum(lse - logits[np.arange(len(y)), y])
        return c * loss + 0.5 * float(np.sum(pen * (t - np.hstack([w0, np.zeros((k, 1))])) ** 2))

    f = objective(theta)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (reported as the fit's iterations)
        logits = zi @ theta.T + offset
        p = _sigmoid(logits) if k == 1 else _softmax(logits)
        shift = theta - np.hstack([w0, np.zeros((k, 1))])
        grad = c * (p - target).T @ zi + pen * shift  # (k, d1)
        if k == 1:
            h = c * (zi * (p * (1 - p))).T @ zi + np.diag(pen)
        else:  # the multinomial Hessian, block (a, b) = C * sum_i p_ia (delta_ab - p_ib) z_i z_i^T
            wts = p[:, :, None] * (np.eye(k)[None] - p[:, None, :])  # (N, k, k)
            if d1 <= 160:  # one product over the samples: (k*k, N) @ (N, d1*d1)
                outer = (zi[:, :, None] * zi[:, None, :]).reshape(len(zi), -1)
                h = (wts.reshape(len(zi), -1).T @ outer).reshape(k, k, d1, d1).transpose(0, 2, 1, 3)
                h = c * h.reshape(k * d1, k * d1)
            else:  # many features: block by block, without the (N, d1, d1) array
                h = np.zeros((k * d1, k * d1))
                for a in range(k):
                    for b in range(a, k):
                        block = c * (zi * wts[:, a, b, None]).T @ zi
                        h[a * d1:(a + 1) * d1, b * d1:(b + 1) * d1] = block
                        h[b * d1:(b + 1) * d1, a * d1:(a + 1) * d1] = block.T
            h += np.diag(np.tile(pen, k))
        # The intercepts of a softmax can all move together: a tiny ridge keeps the system solvable.
        step = np.linalg.solve(h + 1e-9 * np.eye(len(h)), grad.reshape(-1)).reshape(k, d1)
        t = 1.0
        while True:
            new = theta - t * step
            f_new = objective(new)
            if f_new <= f - 1e-4 * t * float(np.sum(grad * step)) or t < 1e-8:
                break
            t *= 0.5
        if f_new > f:  # no descent left (rounding): the previous point is the optimum
            break
        done = f - f_new <= tol * max(1.0, abs(f))
        theta, f = new, f_new
        if done:
            break
    coef = theta[:, :-1] if basis is None else prior0 + theta[:, :-1] @ basis.T
    return Fit(mean, var, eps, coef, theta[:, -1], it)


def stratified_folds(y: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold number per item, each class dealt round-robin over the folds after a seeded shuffle."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    out = np.empty(len(y), np.int64)
    start = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        out[idx] = (np.arange(len(idx)) + start) % folds
        start += len(idx)  # the next class starts where this one ended: folds stay balanced in size
    return out


@dataclass
class CrossValidation:
    """The winning candidate of a grid: its C, whether it used the prior, fold accuracies, out-of-fold probs."""

    c: float
    prior: bool
    fold: np.ndarray
    accuracies: list
    oof: np.ndarray
    log_loss: float
    grid: list

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.accuracies))


def cross_validate(x: np.ndarray, y: np.ndarray, classes: int, *, prior_head: LinearHead | None = None,
                   use_prior: tuple = (False,), folds: int = 5, seed: int = 0, cs: tuple = C_GRID,
                   eps: float = EPS) -> CrossValidation:
    """Score every (prior or not, C) by stratified k-fold CV on the same folds; returns the best.

    Ties: the lower out-of-fold log loss, then the prior, then the smaller C (the head that moves least).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.int64)
    per_class = np.bincount(y, minlength=classes)
    k = int(min(folds, per_class[per_class > 0].min()))
    if k < 2:
        raise ValueError("cross-validation needs at least 2 photos of each labelled class")
    fold = stratified_folds(y, k, seed)
    best, best_key, grid = None, None, []
    for with_prior in use_prior:
        last: dict[int, Fit] = {}  # per fold, the fit at the previous C: a warm start
        for c in cs:
            oof = np.zeros((len(y), classes))
            accs = []
            for f in range(k):
                held = fold == f
                mean, var = x[~held].mean(axis=0), x[~held].var(axis=0)
                w0 = prior_coef(prior_head, mean, var, eps) if with_prior and prior_head is not None else None
                fit = fit_logreg(x[~held], y[~held], c, classes, prior=w0, eps=eps, mean=mean, var=var,
                                 init=last.get(f))
                last[f] = fit
                oof[held] = fit.predict_proba(x[held])
                accs.append(float(np.mean(oof[held].argmax(axis=1) == y[held])))
            loss = float(-np.mean(np.log(np.clip(oof[np.arange(len(y)), y], 1e-15, 1.0))))
            grid.append({"C": c, "prior": with_prior, "accuracy": float(np.mean(accs)), "log_loss": loss})
            key = (-round(float(np.mean(accs)), 9), round(loss, 9), not with_prior, c)
            if best_key is None or key < best_key:
                best_key, best = key, CrossValidation(c, with_prior, fold, accs, oof, loss, [])
    best.grid = grid
    return best


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
