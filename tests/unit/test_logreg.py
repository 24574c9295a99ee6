"""The door's numpy logistic regression against scikit-learn's on the same data and C (|dp| < 1e-3), the pull
toward a prior head, and the folded head the door runs."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.inference import logreg

sklearn = pytest.importorskip("sklearn.linear_model")


def data(classes: int, n: int = 90, d: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 20, d) + rng.normal(size=d) * 5  # unscaled, off-centre features
    x[:, :3] += y[:, None] * 15.0
    return x, y


@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.parametrize("c", [1e-3, 0.1, 1.0])
def test_fit_matches_scikit_learn(classes, c):
    x, y = data(classes)
    fit = logreg.fit_logreg(x, y, c, classes)
    z = fit.standardise(x)
    ref = sklearn.LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(z, y)
    assert np.abs(ref.predict_proba(z) - fit.predict_proba(x)).max() < 1e-3
    head = logreg.LinearHead.from_fit(fit)  # the standardiser folded in: raw features in
    assert np.abs(head.class_probs(x) - fit.predict_proba(x)).max() < 1e-9


@pytest.mark.parametrize("classes", [2, 3])
def test_a_strong_prior_keeps_the_shipped_head_and_a_weak_one_lets_the_data_speak(classes):
    x, y = data(classes, seed=1)
    rng = np.random.default_rng(5)
    mean, var = x.mean(0), x.var(0)
    shipped = logreg.LinearHead(rng.normal(size=(x.shape[1], 1 if classes == 2 else classes)),
                                np.zeros(1 if classes == 2 else classes))
    w0 = logreg.prior_coef(shipped, mean, var)
    tight = logreg.fit_logreg(x, y, 1e-6, classes, prior=w0)
    assert np.abs(tight.coef - w0).max() < 1e-3
    free = logreg.fit_logreg(x, y, 1e-6, classes)
    assert np.abs(free.coef).max() < 1e-3  # toward zero without a prior
    loose = logreg.fit_logreg(x, y, 100.0, classes, prior=w0)
    plain = logreg.fit_logreg(x, y, 100.0, classes)
    acc = [np.mean(f.predict_proba(x).argmax(1) == y) for f in (loose, plain)]
    assert abs(acc[0] - acc[1]) <= 0.05 and np.abs(loose.coef - w0).max() > 0.1  # the data moved it


def test_cross_validation_prefers_the_prior_on_ties_and_folds_are_stratified():
    x, y = data(2, n=40)
    folds = logreg.stratified_folds(y, 5)
    for f in range(5):
        assert np.bincount(y[folds == f]).tolist() == [4, 4]
    cv = logreg.cross_validate(x, y, 2, use_prior=(False,), folds=5)
    assert 0.5 < cv.accuracy <= 1 and len(cv.grid) == len(logreg.C_GRID) and cv.oof.shape == (40, 2)


@pytest.mark.parametrize("classes", [2, 3])
def test_more_features_than_photos_gives_the_same_optimum_in_the_photos_span(classes):
    """A face head reads ~1,500 features and the door has a few dozen photos: the fit runs in their span."""
    x, y = data(classes, n=30, d=400, seed=2)
    c = 0.05
    fit = logreg.fit_logreg(x, y, c, classes)
    z = fit.standardise(x)
    ref = sklearn.LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(z, y)
    assert np.abs(ref.predict_proba(z) - fit.predict_proba(x)).max() < 1e-3
    # With a prior: the full objective's gradient vanishes at the reduced fit (it is the optimum, not a guess).
    w0 = np.random.default_rng(3).normal(size=fit.coef.shape)
    pulled = logreg.fit_logreg(x, y, c, classes, prior=w0)
    p = pulled.predict_proba(x)
    k = fit.coef.shape[0]
    target = np.eye(classes)[y][:, -k:] if k == 1 else np.eye(classes)[y]
    grad = c * (p[:, -k:] - target).T @ pulled.standardise(x) + (pulled.coef - w0)
    assert np.abs(grad).max() < 1e-6
