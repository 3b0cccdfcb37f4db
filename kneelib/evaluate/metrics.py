"""Classification metrics for KL grading, all from scikit-learn (plus a vectorised bootstrap).

:func:`compute_metrics` turns true class indices and class probabilities into the metric dict ``M``
that ``metrics.json`` stores for every model and for the ensemble: the paper's accuracy, weighted
precision/recall/F1, per-class table (Table 6: per-class "accuracy" is the recall), confusion matrix
(Fig. 5) and one-vs-rest ROC curves with AUC (Fig. 6), and beyond the paper quadratic weighted kappa,
mean absolute grade error, balanced accuracy, macro averages and bootstrap confidence intervals.
Every value is a plain Python number/list (JSON-ready); undefined values (an AUC for a class absent
from the labels, a kappa of a constant prediction) are ``None``.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    mean_absolute_error,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from kneelib.evaluate.calibration import expected_calibration_error

if TYPE_CHECKING:
    from kneelib.data.schemes import Scheme

#: The keys of every metric dict ``M`` (in metrics.json order).
METRIC_KEYS = (
    "n",
    "accuracy",
    "balanced_accuracy",
    "qwk",
    "mae",
    "ece",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "per_class",
    "confusion_matrix",
    "roc",
    "ci",
)
#: The keys of ``M["per_class"][class_name]``; ``accuracy`` equals ``recall`` (the paper's Table 6).
PER_CLASS_KEYS = ("precision", "recall", "f1", "accuracy", "support", "auc")

N_BOOTSTRAP = 1000
CI_LEVEL = 0.95
BOOTSTRAP_SEED = 0


def _num(x: float) -> float | None:
    """A JSON-safe float: NaN/inf become ``None``."""
    x = float(x)
    return x if math.isfinite(x) else None


def _check_inputs(y_true: np.ndarray, probs: np.ndarray, num_classes: int) -> None:
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probabilities must have shape (N, {num_classes}), got {probs.shape}")
    if y_true.shape != (probs.shape[0],):
        raise ValueError(f"{y_true.shape[0]} labels for {probs.shape[0]} probability rows")
    if y_true.size == 0:
        raise ValueError("no samples to score")
    if y_true.min() < 0 or y_true.max() >= num_classes:
        raise ValueError(f"class indices must lie in 0..{num_classes - 1}")


def qwk(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float | None:
    """Quadratic weighted Cohen's kappa over all ``num_classes`` classes (``None`` if undefined)."""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # e.g. one label only → NaN → None
        value = cohen_kappa_score(
            y_true, y_pred, labels=list(range(num_classes)), weights="quadratic"
        )
    return _num(value)


def _batched_qwk(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Quadratic kappa of each row of (B, N) label arrays — the same formula as scikit-learn's."""
    b = y_true.shape[0]
    k = num_classes
    flat = (np.arange(b)[:, None] * k * k + y_true * k + y_pred).ravel()
    cm = np.bincount(flat, minlength=b * k * k).reshape(b, k, k).astype(np.float64)
    idx = np.arange(k)
    w = (idx[:, None] - idx[None, :]) ** 2
    expected = cm.sum(axis=2)[:, :, None] * cm.sum(axis=1)[:, None, :] / cm.sum(axis=(1, 2))[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - (w * cm).sum(axis=(1, 2)) / (w * expected).sum(axis=(1, 2))


def bootstrap_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int,
    *,
    n_boot: int = N_BOOTSTRAP,
    level: float = CI_LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, list[float | None]]:
    """Percentile bootstrap intervals ``{"accuracy": [lo, hi], "qwk": [lo, hi]}``.

    Resamples the N (true, predicted) pairs with replacement ``n_boot`` times (fixed ``seed``, so the
    result is deterministic), all resamples at once with numpy.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y_true.size, size=(n_boot, y_true.size))
    t, p = y_true[idx], y_pred[idx]
    acc = (t == p).mean(axis=1)
    kappa = _batched_qwk(t, p, num_classes)
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]

    def interval(values: np.ndarray) -> list[float | None]:
        values = values[np.isfinite(values)]
        if values.size == 0:
            return [None, None]
        return [_num(v) for v in np.percentile(values, q)]

    return {"accuracy": interval(acc), "qwk": interval(kappa)}


def _difference_summary(observed: float, diffs: np.ndarray, level: float) -> dict[str, float | None]:
    """``{"diff", "lo", "hi", "p"}`` of an observed difference and its bootstrap resamples: the percentile
    interval, and ``p`` the share of resamples on the other side of zero, doubled (two-sided)."""
    lo, hi = np.percentile(diffs, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    other_side = np.mean(diffs <= 0) if observed > 0 else np.mean(diffs >= 0)
    return {"diff": observed, "lo": _num(lo), "hi": _num(hi), "p": _num(min(1.0, 2 * other_side))}


def paired_difference_ci(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    n_boot: int = N_BOOTSTRAP,
    level: float = CI_LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, float | None]:
    """Accuracy of B minus accuracy of A on the same images, with a paired percentile bootstrap interval.

    ``correct_a``/``correct_b``: per image, 1 where the model was right (or the share of its seeds that were).
    The images are resampled once for both models, so what the two get right together cancels; ``p`` is the
    share of resamples in which the difference has the other sign than the observed one (two-sided: doubled).
    Returns ``{"diff", "lo", "hi", "p"}`` as fractions (``None`` without images)."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in size: {a.shape} vs {b.shape}")
    if a.size == 0:
        return {"diff": None, "lo": None, "hi": None, "p": None}
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    diffs = (b[idx] - a[idx]).mean(axis=1)
    observed = float((b - a).mean())
    return _difference_summary(observed, diffs, level)


def two_level_difference_ci(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    n_boot: int = N_BOOTSTRAP,
    level: float = CI_LEVEL,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, float | None]:
    """Accuracy of B minus A, with a two-level bootstrap interval that covers the seeds' spread and the images'.

    ``correct_a`` (seeds of A × images) and ``correct_b`` (seeds of B × the same images): 1 where that seed's
    model was right. Each resample draws the seeds of A and of B with replacement (separately: a seed number
    pairs nothing across architectures), then the images once for both (what the two get right together
    cancels), and takes the difference of the drawn seeds' mean accuracies. With one seed a side the interval
    is the images-only one. Returns ``{"diff", "lo", "hi", "p"}`` as :func:`paired_difference_ci`."""
    a = np.atleast_2d(np.asarray(correct_a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(correct_b, dtype=np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired samples differ in images: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[1] == 0:
        return {"diff": None, "lo": None, "hi": None, "p": None}
    rng = np.random.default_rng(seed)
    seeds_a = rng.integers(0, a.shape[0], size=(n_boot, a.shape[0]))
    seeds_b = rng.integers(0, b.shape[0], size=(n_boot, b.shape[0]))
    images = rng.integers(0, a.shape[1], size=(n_boot, a.shape[1]))
    per_image = b[seeds_b].mean(axis=1) - a[seeds_a].mean(axis=1)  # n_boot × images
    diffs = np.take_along_axis(per_image, images, axis=1).mean(axis=1)
    observed = float(b.mean() - a.mean())
    return _difference_summary(observed, diffs, level)


def _roc(y_true: np.ndarray, probs: np.ndarray, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """One-vs-rest ROC curve points and AUC per class (empty curve, ``auc: None`` if undefined)."""
    roc: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        positive = y_true == k
        if positive.all() or not positive.any():  # one-vs-rest needs both positives and negatives
            roc[name] = {"fpr": [], "tpr": [], "auc": None}
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, k])
        roc[name] = {
            "fpr": [float(v) for v in fpr],
            "tpr": [float(v) for v in tpr],
            "auc": _num(roc_auc_score(positive, probs[:, k])),
        }
    return roc


def compute_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    scheme: Scheme,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """The metric dict ``M`` for true class indices ``y_true`` (N,) and probabilities ``probs`` (N, C).

    The prediction is the most probable class. Averages and per-class values run over all the scheme's
    classes (``zero_division=0``: a class never predicted has precision 0). ``mae`` is the mean
    absolute difference of class indices: the KL grade for ``kl5``, the merged 0-3 scale for ``kl4``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    names = tuple(scheme.class_names)
    k = len(names)
    _check_inputs(y_true, probs, k)
    y_pred = probs.argmax(axis=1)
    labels = list(range(k))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)  # balanced accuracy: predicted class not in y_true
        averaged = {
            avg: precision_recall_fscore_support(
                y_true, y_pred, labels=labels, average=avg, zero_division=0
            )
            for avg in ("weighted", "macro")
        }
        prec, rec, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=None, zero_division=0
        )
        balanced = balanced_accuracy_score(y_true, y_pred)

    roc = _roc(y_true, probs, names)
    per_class = {
        name: {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "accuracy": float(rec[i]),
            "support": int(support[i]),
            "auc": roc[name]["auc"],
        }
        for i, name in enumerate(names)
    }
    metrics: dict[str, Any] = {
        "n": int(y_true.size),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _num(balanced),
        "qwk": qwk(y_true, y_pred, k),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "ece": expected_calibration_error(y_true, probs),
    }
    for avg, (p, r, f, _) in averaged.items():
        metrics[f"precision_{avg}"] = float(p)
        metrics[f"recall_{avg}"] = float(r)
        metrics[f"f1_{avg}"] = float(f)
    metrics["per_class"] = per_class
    metrics["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    metrics["roc"] = roc
    metrics["ci"] = bootstrap_ci(y_true, y_pred, k, n_boot=n_boot, seed=seed)
    return {key: metrics[key] for key in METRIC_KEYS}
