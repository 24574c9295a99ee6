"""The cross-validated few-shot head on synthetic features: folds, choice, Keras == sklearn, OOF threshold."""

import numpy as np
import pytest

from toolkit.config import FinetuneConfig
from toolkit.errors import ToolkitError
from toolkit.export.api import _threshold_rule
from toolkit.export.validate import choose_threshold, threshold_at
from toolkit.settings import SettingError
from toolkit.train import cvhead as CV


def _features(n=80, dim=12, seed=0, signal=3.0, classes=2):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(0, 1, (n, dim)).astype(np.float32) + 5.0  # an offset: standardisation must remove it
    x[:, :classes] += signal * np.eye(classes, dtype=np.float32)[y]
    return x, y


def test_duplicates_never_straddle_a_fold_and_classes_are_stratified():
    y = np.array([0, 1] * 30)
    groups = np.arange(60)
    groups[[1, 7, 13]] = 1  # byte-identical copies (and an augmented copy) of item 1: one group
    groups[[20, 22, 24, 26]] = 20
    fold = CV.make_folds(y, groups, 5, seed=3)
    assert len(set(fold[[1, 7, 13]])) == 1 and len(set(fold[[20, 22, 24, 26]])) == 1
    assert fold.max() == 4
    for f in range(5):  # every fold holds both classes
        assert set(y[fold == f]) == {0, 1}


def test_too_few_distinct_images_per_class_is_one_clear_error():
    y = np.array([0, 0, 0, 1, 1])
    groups = np.array([0, 1, 2, 3, 3])  # class 1: two copies of one photo
    with pytest.raises(ToolkitError, match="class 1 has 1 distinct image"):
        CV.make_folds(y, groups, 5, seed=0)
    assert CV.make_folds(np.array([0, 0, 0, 1, 1]), np.arange(5), 5, 0).max() == 1  # fewer folds, not an error


def test_chooses_the_informative_layer_and_a_c_that_learns():
    x, y = _features()
    noise = np.random.default_rng(9).normal(0, 1, x.shape).astype(np.float32)
    result = CV.cross_validate({"noise": noise, "signal": x}, y, np.arange(len(y)), folds=4, cs=(1e-6, 1.0))
    assert result.layer == "signal" and result.c == 1.0
    assert np.mean(result.accuracies) > 0.9 and result.folds == 4
    assert len(result.grid) == 4 and result.oof.shape == (len(y), 2)
    # C=1e-6 ranks items as well (same accuracy) but its probabilities sit at 0.5: the log loss breaks the tie
    best = min(result.grid, key=lambda r: (-r["accuracy_mean"], r["log_loss"]))
    assert (best["layer"], best["C"]) == (result.layer, result.c)
    # out of fold: each item's score comes from a head fitted without its fold
    f0 = result.fold == 0
    fit = CV.fit_head(x[~f0], y[~f0], 1.0)
    assert np.allclose(fit.predict_proba(x[f0]), result.oof[f0], atol=1e-6)


def test_fewer_images_than_features_fits_the_same_regression_in_their_span():
    from sklearn.linear_model import LogisticRegression

    x, y = _features(n=30, dim=80, signal=1.0)
    fit = CV.fit_head(x, y, 0.1)
    assert fit.basis is not None and fit.basis.shape[0] < 30
    direct = LogisticRegression(C=0.1, max_iter=5000, tol=1e-10).fit(fit.standardise(x), y)
    new, _ = _features(n=20, dim=80, seed=5, signal=1.0)
    assert np.abs(fit.predict_proba(new) - direct.predict_proba(fit.standardise(new))).max() < 1e-3
    assert np.abs(fit.coef - direct.coef_).max() < 1e-3 * np.abs(direct.coef_).max()


@pytest.mark.parametrize("classes,dim", [(2, 10), (3, 10), (2, 300)])
def test_keras_head_reproduces_sklearn_probabilities(classes, dim):
    from toolkit._keras import keras
    from toolkit.models.layers import classifier

    k = keras()
    x, y = _features(n=90, dim=dim, classes=classes, signal=1.0)
    inp = k.Input((x.shape[1],))
    norm = k.layers.BatchNormalization(name="feat_norm")
    model = k.Model(inp, classifier(classes, "fc")(norm(inp)))
    fit = CV.fit_head(x, y, 0.5, eps=norm.epsilon)
    CV.set_head_weights(model, fit)
    keras_p = model.predict(x, verbose=0)
    sk = fit.predict_proba(x)
    expected = sk[:, 1:] if classes == 2 else sk
    assert keras_p.shape == expected.shape
    assert np.abs(keras_p - expected).max() < 1e-5


class _Split:
    """The part of a data split the threshold rule reads: a name, a length, and its arrays."""

    def __init__(self, name, y):
        self.name, self.y = name, np.asarray(y)

    def __len__(self):
        return len(self.y)

    def numpy(self):
        return np.zeros((len(self.y), 4, 4, 3), np.uint8), self.y


class _Splits:
    def __init__(self, val, test):
        self.val, self.test = val, test


def test_oof_threshold_is_chosen_on_oof_scores_and_far_measured_elsewhere(tmp_path):
    x, y = _features(n=120, signal=1.5)
    result = CV.cross_validate({"flatten": x}, y, np.arange(len(y)), folds=4, cs=(1.0,))
    CV.write_oof(tmp_path / CV.OOF_FILE, result, y, np.arange(len(y)))
    logs = []
    test = _Split("test", [0] * 20 + [1] * 10)
    splits = _Splits(_Split("val", []), test)
    choose, record = _threshold_rule(tmp_path, tmp_path / "exp", splits, test, test.y, "sigmoid", 0.05, logs.append)
    chosen = choose_threshold(result.oof[:, 1], y, 0.05)
    assert choose(None, None) == chosen["threshold"]
    assert record["source"] == "out-of-fold cross-validation scores" and record["n"] == 120
    # the scores file by name and sha256, never a path outside the export (a manifest names nothing there)
    assert record["folds"] == 4 and record["scores"]["name"] == "oof.npz" and len(record["scores"]["sha256"]) == 64
    assert not logs
    # the file's FAR/FRR come from other (held-out) scores at that threshold
    p_test, y_test = np.array([0.1, 0.2, chosen["threshold"], 0.9]), np.array([0, 0, 0, 1])
    measured = threshold_at(chosen["threshold"], p_test, y_test)
    assert measured["far"] == pytest.approx(1 / 3) and measured["frr"] == 0.0 and measured["negatives"] == 3
    # without out-of-fold scores or a validation split: chosen on the held-out split itself, recorded as such
    choose, record = _threshold_rule(tmp_path / "none", tmp_path, splits, test, test.y, "sigmoid", 0.05, logs.append)
    assert record == {"source": "test split", "n": 30, "far_measured_on": "test split (the same images)"}
    probs = np.linspace(0, 1, 30)[:, None]
    assert choose(None, probs) == choose_threshold(probs[:, 0], test.y, 0.05)["threshold"]
    assert _threshold_rule(tmp_path, tmp_path, splits, test, test.y, "softmax", 0.05, logs.append) == (None, None)


def test_auto_head_and_config_rules():
    assert CV.choose_head("auto", 300, 500, 1) == "cv" and CV.choose_head("auto", 800, 500, 1) == "keras"
    assert CV.choose_head("auto", 800, 500, 2) == "cv" and CV.choose_head("keras", 10, 500, 1) == "keras"
    base = dict(model="happy", data="synthetic:happy", out="x")
    with pytest.raises(SettingError, match="add --cache-features"):
        FinetuneConfig(**base, head="cv")
    with pytest.raises(SettingError, match="several candidate layers"):
        FinetuneConfig(**base, cache_features=True, head="keras", feature_layer="a,b")
    cfg = FinetuneConfig(**base, cache_features=True, feature_layer="a, b,c")
    assert cfg.feature_layers == ("a", "b", "c") and cfg.head == "auto"
