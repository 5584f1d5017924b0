"""Scores of a benchmark run: a probe's class scores in the data set's order, the metrics of :mod:`skprobe.metrics`."""

from __future__ import annotations

import numpy as np

from ..metrics import macro_map, macro_roc_auc, micro_ap, top1_accuracy

__all__ = ["class_scores", "compute_scores", "mean_over_seeds"]


def class_scores(probe, X, n_classes: int) -> np.ndarray:
    """Scores ``(n, n_classes)`` in the data set's class order (single-label probes know only
    the classes seen in training; a missing class gets a score below every other)."""
    scores = probe.decision_function(X)
    if scores.ndim == 1:
        scores = np.column_stack([-scores, scores])
    multilabel = getattr(probe, "target_type_", None) == "multilabel"
    if multilabel and scores.shape[1] != n_classes:
        raise ValueError(f"the probe was trained on {scores.shape[1]} classes but the test labels have {n_classes}; "
                         "use tokens and labels of the data set the probe was trained on")
    if scores.shape[1] == n_classes:
        return scores
    if scores.shape[1] > n_classes or probe.classes_.astype(int).max() >= n_classes:
        raise ValueError(f"the probe was trained on {len(probe.classes_)} classes (indices up to "
                         f"{probe.classes_.astype(int).max()}) but the test labels have {n_classes}; "
                         "use tokens and labels of the data set the probe was trained on")
    full = np.full((len(scores), n_classes), scores.min() - 1.0)
    full[:, probe.classes_.astype(int)] = scores
    return full


def compute_scores(Y_test: np.ndarray, scores: np.ndarray, multilabel: bool) -> dict[str, float]:
    out = {
        "macro_map": macro_map(Y_test, scores),
        "micro_ap": micro_ap(Y_test, scores),
        "macro_roc_auc": macro_roc_auc(Y_test, scores),
    }
    if not multilabel:
        out["top1_accuracy"] = top1_accuracy(Y_test, scores)
    return out



def mean_over_seeds(values: list[list[float]]) -> list[float]:
    """Column means; NaN (a class without test positives) stays NaN without a warning."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=0)
    count = finite.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan).tolist()
