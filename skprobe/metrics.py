"""Named evaluation metrics for probes, with a stated policy for empty classes.

=====================  ===============================================  ============================
name                   definition                                       classes without positives
=====================  ===============================================  ============================
``macro_map`` (cmAP)   mean over classes of average precision           excluded from the mean
``micro_ap``           AP of all (clip, class) pairs pooled together    contribute their negatives
``macro_roc_auc``      mean over classes of ROC-AUC                     excluded (also classes
                                                                        without negatives)
``top1_accuracy``      the top-scored class is a true class             n/a (clips without any
                                                                        positive count as misses)
=====================  ===============================================  ============================

scikit-learn's own ``average_precision_score(average="macro")`` scores a class
without positives as 0 (and ROC-AUC as NaN with a warning), which silently
drags the mean down on small test splits; here such classes are left out and
:func:`empty_classes` tells which they were. A metric with no class left to
average returns NaN.

Each metric takes ``y_true`` as a 0/1 indicator matrix ``(n, C)`` or as labels
``(n,)`` (then one-hot encoded over ``labels`` or the labels seen) and scores
``y_score`` of shape ``(n, C)`` (probabilities or logits).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import label_binarize

__all__ = [
    "macro_map",
    "micro_ap",
    "macro_roc_auc",
    "top1_accuracy",
    "per_class_ap",
    "empty_classes",
    "METRICS",
    "SCORERS",
    "get_scorer",
    "MetricScorer",
]


def _as_indicator(y_true, n_classes: int, labels=None) -> np.ndarray:
    y_true = np.asarray(y_true)
    if y_true.ndim == 2:
        if y_true.shape[1] != n_classes:
            raise ValueError(f"y_true has {y_true.shape[1]} columns but y_score has {n_classes}")
        return (y_true > 0).astype(int)
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be labels (n,) or an indicator matrix (n, C), got shape {y_true.shape}")
    classes = np.unique(y_true) if labels is None else np.asarray(labels)
    if len(classes) != n_classes:
        raise ValueError(
            f"y_true holds {len(classes)} classes but y_score has {n_classes} columns; pass labels= "
            "(e.g. the estimator's classes_)"
        )
    out = label_binarize(y_true, classes=classes)
    return out if n_classes > 2 else np.column_stack([1 - out[:, 0], out[:, 0]])


def _check(y_true, y_score, labels=None) -> tuple[np.ndarray, np.ndarray]:
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_score.ndim == 1:  # binary decision_function / positive-class probability
        y_score = np.column_stack([-y_score, y_score])
    if y_score.ndim != 2:
        raise ValueError(f"y_score must have shape (n, n_classes), got {y_score.shape}")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score contains NaN or infinite values")
    y = _as_indicator(y_true, y_score.shape[1], labels)
    if y.shape[0] != y_score.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} samples but y_score has {y_score.shape[0]}")
    return y, y_score


def empty_classes(y_true, n_classes: int | None = None, labels=None) -> np.ndarray:
    """Indices of the classes with no positive clip in ``y_true``."""
    y_true = np.asarray(y_true)
    if n_classes is None:
        n_classes = y_true.shape[1] if y_true.ndim == 2 else len(np.unique(y_true) if labels is None else labels)
    y = _as_indicator(y_true, n_classes, labels)
    return np.flatnonzero(y.sum(axis=0) == 0)


def per_class_ap(y_true, y_score, labels=None) -> np.ndarray:
    """Average precision of each class; NaN for classes without positives.

    Examples
    --------
    >>> per_class_ap([[1, 0], [0, 0]], [[0.9, 0.1], [0.2, 0.8]])
    array([ 1., nan])
    """
    y, s = _check(y_true, y_score, labels)
    out = np.full(y.shape[1], np.nan)
    for c in range(y.shape[1]):
        if y[:, c].any():
            out[c] = _average_precision(y[:, c], s[:, c])
    return out


def _average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """``sklearn.metrics.average_precision_score`` of one class (with positives), without its input checks.

    The same step-wise sum over the distinct score thresholds in decreasing
    order, ``sum_k (R_k - R_{k-1}) P_k``, tied scores forming one threshold;
    equal to scikit-learn's to float rounding (tested). Selection loops call
    it thousands of times, where the checks cost 30 times the sum.
    """
    order = np.argsort(score, kind="mergesort")[::-1]
    score, hits = score[order], y[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # last clip of every threshold
    tps = np.cumsum(hits)[last]
    precision = tps / (last + 1)
    recall_steps = np.diff(tps, prepend=0.0) / tps[-1]
    return float(recall_steps @ precision)


def macro_map(y_true, y_score, labels=None) -> float:
    """Macro mAP ("cmAP" in BirdSet): mean AP over classes that have positives.

    Examples
    --------
    >>> macro_map([[1, 0], [0, 1], [0, 0]], [[0.9, 0.2], [0.1, 0.3], [0.2, 0.4]])
    0.75
    """
    ap = per_class_ap(y_true, y_score, labels)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def micro_ap(y_true, y_score, labels=None) -> float:
    """Micro AP: average precision over all (clip, class) pairs pooled.

    Examples
    --------
    >>> micro_ap([[1, 0], [0, 1]], [[0.9, 0.2], [0.1, 0.8]])
    1.0
    """
    y, s = _check(y_true, y_score, labels)
    if not y.any():
        return float("nan")
    return float(average_precision_score(y.ravel(), s.ravel()))


def macro_roc_auc(y_true, y_score, labels=None) -> float:
    """Mean ROC-AUC over classes that have both positives and negatives.

    Examples
    --------
    >>> macro_roc_auc([[1, 0], [0, 1], [0, 1]], [[0.9, 0.2], [0.1, 0.8], [0.3, 0.1]])
    0.75
    """
    y, s = _check(y_true, y_score, labels)
    scores = [roc_auc_score(y[:, c], s[:, c]) for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    return float(np.mean(scores)) if scores else float("nan")


def top1_accuracy(y_true, y_score, labels=None) -> float:
    """Fraction of clips whose highest-scored class is one of their true classes.

    Examples
    --------
    >>> top1_accuracy([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    0.6666666666666666
    """
    y, s = _check(y_true, y_score, labels)
    return float(y[np.arange(len(y)), s.argmax(axis=1)].mean())


METRICS = {
    "macro_map": macro_map,
    "micro_ap": micro_ap,
    "macro_roc_auc": macro_roc_auc,
    "top1_accuracy": top1_accuracy,
}


class MetricScorer:
    """Scorer ``(estimator, X, y) -> float`` for ``scoring=`` in model selection.

    Scores the estimator's ``decision_function`` (logits) when it has one,
    else ``predict_proba``; single-label ``y`` is one-hot encoded over the
    estimator's ``classes_``, so a validation fold that lacks a class still
    scores correctly.
    """

    def __init__(self, metric) -> None:
        self.metric = metric

    def __call__(self, estimator, X, y_true) -> float:
        scores = estimator.decision_function(X) if hasattr(estimator, "decision_function") else (
            estimator.predict_proba(X))
        labels = getattr(estimator, "classes_", None) if np.ndim(y_true) == 1 else None
        return self.metric(y_true, scores, labels=labels)

    def __repr__(self) -> str:
        return f"MetricScorer({self.metric.__name__})"


SCORERS = {name: MetricScorer(metric) for name, metric in METRICS.items()}
SCORERS["cmap"] = SCORERS["macro_map"]


def get_scorer(name: str):
    """A scorer for ``scoring=`` in ``GridSearchCV`` / ``cross_val_score``.

    Parameters
    ----------
    name : {"macro_map", "cmap", "micro_ap", "macro_roc_auc", "top1_accuracy"}

    Examples
    --------
    >>> from skprobe.metrics import get_scorer
    >>> scorer = get_scorer("macro_map")
    """
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; choose from {sorted(SCORERS)}") from None
