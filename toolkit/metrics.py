"""Classification metrics in numpy (no TensorFlow), shared by evaluation, export and the runtime."""

from __future__ import annotations

import math

import numpy as np

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # the FAR/FRR table's rows


def far_upper_95(negatives: int) -> float:
    """The 95 % upper bound of a rate measured as 0 events in ``negatives`` trials: the rule of three, 3 / n.

    One rule for the export's manifest and everything that prints a rate measured as zero.
    """
    return round(min(1.0, 3.0 / negatives), 6) if negatives > 0 else 1.0


def rate_text(rate: float, n: int | None, unit: str = "per frame") -> str:
    """A measured rate for a person: "2.1 % per frame (15 of 719)"; a zero as its bound, "≤ 10 % per frame (0 of 30)".

    Args:
        rate: the measured fraction.
        n: how many trials it was measured on (None: unknown, the fraction alone is printed).
    """
    if not n:
        return f"{100 * rate:.3g} % {unit}"
    events = round(rate * n)
    if events == 0:
        return f"≤ {100 * far_upper_95(n):.3g} % {unit} (0 of {n})"
    return f"{100 * rate:.3g} % {unit} ({events} of {n})"


def as_class_probs(outputs: np.ndarray) -> np.ndarray:
    """Model outputs -> (N, K) class probabilities; a single sigmoid column becomes [1 - p, p]."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    if outputs.shape[1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs


def log_loss(probs: np.ndarray, y: np.ndarray, eps: float = 1e-7) -> float:
    """Mean cross-entropy of the true class."""
    p = np.clip(probs[np.arange(len(y)), y], eps, 1.0)
    return float(-np.mean(np.log(p))) if len(y) else float("nan")


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Counts with true labels in rows and predicted labels in columns."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (y, pred), 1)
    return m


def classification_report(y: np.ndarray, probs: np.ndarray, labels: tuple) -> dict:
    """Accuracy, loss, per-class precision/recall/F1 and the confusion matrix."""
    y = np.asarray(y, dtype=np.int64)
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y, pred, len(labels))
    per_class = {}
    for i, name in enumerate(labels):
        tp, fp, fn = cm[i, i], cm[:, i].sum() - cm[i, i], cm[i, :].sum() - cm[i, i]
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                           "support": int(cm[i, :].sum())}
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "loss": log_loss(probs, y),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def far_frr(p_positive: np.ndarray, is_positive: np.ndarray, threshold: float) -> tuple[float, float]:
    """False-accept rate (negatives with p >= t) and false-reject rate (positives with p < t)."""
    neg, pos = p_positive[~is_positive], p_positive[is_positive]
    far = float((neg >= threshold).mean()) if len(neg) else 0.0
    frr = float((pos < threshold).mean()) if len(pos) else 0.0
    return far, frr


def threshold_table(p_positive: np.ndarray, is_positive: np.ndarray, thresholds=None) -> list[dict]:
    """FAR and FRR at each threshold (binary tasks: the door opens when p >= threshold)."""
    if thresholds is None:
        thresholds = THRESHOLDS
    rows = []
    for t in thresholds:
        far, frr = far_frr(p_positive, is_positive, t)
        rows.append({"threshold": float(t), "far": far, "frr": frr})
    return rows


def wilson_interval(k: int, n: int, z: float = 1.96) -> list[float] | None:
    """The 95 % Wilson score interval of a rate k/n (None when n is 0): honest at small n and at 0 or n."""
    if n <= 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)]
