"""Target handling shared by the probes: binary, multi-class and multi-label ``y``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.sparse import issparse
from sklearn.exceptions import DataConversionWarning
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import type_of_target

__all__ = ["EncodedTargets", "encode_targets"]


@dataclass
class EncodedTargets:
    """``y`` as the probes train on it.

    Attributes
    ----------
    kind : {"binary", "multiclass", "multilabel"}
    classes : ndarray
        Labels of the classes (``arange(n_labels)`` for multi-label).
    indices : ndarray of int64 or None
        Class index per sample (single-label targets).
    indicator : ndarray of float32 of shape (n, n_classes)
        Multi-hot (multi-label) or one-hot (single-label) targets.
    dtype : numpy dtype
        dtype of a multi-label ``y``, returned again by ``predict``.
    """

    kind: str
    classes: np.ndarray
    indices: np.ndarray | None
    indicator: np.ndarray
    dtype: np.dtype


def encode_targets(y, n_samples: int) -> EncodedTargets:
    """Validate ``y`` against ``n_samples`` clips and encode it.

    Raises
    ------
    ValueError
        For a wrong length, continuous or multi-output multi-class targets,
        missing values, sparse ``y``, or a multi-label matrix with entries
        other than 0/1 (such as {1, 2} or {-1, 1}).

    Examples
    --------
    >>> encode_targets(["dog", "cat", "dog"], 3).indices
    array([1, 0, 1])
    >>> encode_targets([[1, 2], [2, 1]], 2)
    Traceback (most recent call last):
    ...
    ValueError: a 2-D y is read as a multi-label indicator matrix and must hold only 0 and 1; got values [1, 2]. ...
    """
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    if issparse(y):
        raise ValueError(
            f"sparse y ({type(y).__name__} of shape {y.shape}) is not supported; pass a dense array, "
            "e.g. y.toarray()"
        )
    y = np.asarray(y)
    if y.ndim == 0 or y.ndim > 2:
        raise ValueError(f"y must be 1-D labels or a 2-D indicator matrix, got shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"y has {y.shape[0]} samples but X has {n_samples} clips; they must match")
    if y.dtype.kind in "fc" and not np.isfinite(y).all():
        raise ValueError("Input y contains NaN or infinity.")
    if y.dtype.kind == "O" and any(v is None or (isinstance(v, float) and np.isnan(v)) for v in y.ravel()):
        raise ValueError("Input y contains NaN or None.")
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please change the shape of y to "
            "(n_samples,), for example using ravel().",
            DataConversionWarning,
            stacklevel=3,
        )
        y = y.ravel()
    kind = type_of_target(y, input_name="y")
    if kind == "multilabel-indicator":
        values = np.unique(y)
        if not np.isin(values, (0, 1)).all():
            raise ValueError(
                f"a 2-D y is read as a multi-label indicator matrix and must hold only 0 and 1; got values "
                f"{values[:10].tolist()}. Map the labels to 0/1 (e.g. y == positive_label), or wrap the probe in "
                "sklearn.multioutput.MultiOutputClassifier for one classifier per column"
            )
        indicator = y.astype(np.float32)
        return EncodedTargets("multilabel", np.arange(y.shape[1]), None, indicator, y.dtype)
    if kind in ("binary", "multiclass"):
        encoder = LabelEncoder().fit(y)
        indices = encoder.transform(y).astype(np.int64)
        indicator = np.eye(len(encoder.classes_), dtype=np.float32)[indices]
        return EncodedTargets(kind, encoder.classes_, indices, indicator, y.dtype)
    if kind == "multiclass-multioutput":
        raise ValueError(
            "multi-output y with non-binary columns is not supported; pass a 0/1 indicator matrix "
            "for multi-label data or wrap the probe in sklearn.multioutput.MultiOutputClassifier"
        )
    raise ValueError(f"Unknown label type: {kind!r}. y must hold class labels or a 0/1 indicator matrix.")
