"""Input validation of the probes: token maps in, a :class:`TokenSource` out, dimensions checked."""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import _check_feature_names, check_array, validate_data

from ._tokens import TokenSource, check_chunks, is_token_array

__all__ = ["TokenInputMixin", "check_groups"]

_TOKEN_DTYPES = [np.float32, np.float16, np.float64]


def check_groups(groups, n_clips: int) -> np.ndarray | None:
    """``groups`` of ``fit`` as a 1-D array of one label per clip (None stays None).

    >>> check_groups(["a", "a", "b"], 3)
    array(['a', 'a', 'b'], dtype='<U1')
    """
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) != n_clips:
        raise ValueError(f"groups must hold one group label per clip: got shape {groups.shape} for "
                         f"{n_clips} clips in X")
    try:
        np.unique(groups)
    except TypeError as error:  # labels numpy cannot order (mixed str and int, None)
        raise ValueError(f"groups must be labels of one kind that sort (all str or all int): {error}") from None
    return groups


class TokenInputMixin:
    """Validation of ``X`` for the probes (mixed into :class:`~skprobe.probes.base.BaseProbeClassifier`).

    Sets ``n_features_in_`` (and ``feature_names_in_`` for 2-D input) when
    ``reset``, as scikit-learn's ``validate_data`` does.
    """

    def _validate_tokens(self, X, *, reset: bool, check_values: bool = True) -> TokenSource:
        """``X`` as a :class:`TokenSource` over finite float tokens ``(n, n_tokens, dim)``.

        Float ndarrays, memory maps and store-backed array-likes of 2 or 3
        dimensions are checked in chunks without a converted copy; anything
        else (lists, DataFrames, integer arrays) goes through scikit-learn's
        validation. Both set the same fitted attributes. With
        ``check_values=False`` the chunked check for NaN and infinity is left
        to the caller (``fit`` does it while staging the tokens).
        """
        X = self._prepare_tokens(X, reset=reset)
        ndim = getattr(X, "ndim", None) if not isinstance(X, (list, tuple)) else np.ndim(X)
        if ndim is not None and ndim > 3:
            raise ValueError(
                f"X must be (n_clips, n_tokens, dim) or (n_clips, dim) token arrays, got a {ndim}-D array of shape "
                f"{np.shape(X)}; for several encoder layers select one (e.g. X[:, -1]) or merge the layer axis"
            )
        if is_token_array(X):
            if ndim == 2:
                _check_feature_names(self, X, reset=reset)
            source = TokenSource(X)
            self._check_dim(source.shape[2], reset, ndim)
        elif ndim == 3:
            X = check_array(X, allow_nd=True, dtype=_TOKEN_DTYPES, input_name="X")
            if X.shape[1] < 1 or X.shape[2] < 1:
                raise ValueError(f"X needs at least one token of at least one dimension, got shape {X.shape}")
            self._check_dim(X.shape[2], reset, ndim)
            source = TokenSource(X)
        else:
            source = TokenSource(validate_data(self, X, reset=reset, dtype=_TOKEN_DTYPES))
        if check_values:
            check_chunks(source)  # after the cast to the compute dtype: float64 beyond float32 is caught too
        if source.shape[1] <= self.prefix_tokens and self._needs_patches():
            raise ValueError(
                f"X has {source.shape[1]} token(s) per clip but prefix_tokens={self.prefix_tokens}: no patch tokens "
                "are left to pool over; lower prefix_tokens or pass the patch tokens"
            )
        return source

    def _check_dim(self, dim: int, reset: bool, ndim: int) -> None:
        if reset:
            self._set_fitted(n_features_in_=dim)
            if ndim == 3:
                self.__dict__.pop("feature_names_in_", None)
        elif dim != self.n_features_in_:
            detail = " (the token embedding dimension seen in fit)" if ndim == 3 else ""
            raise ValueError(
                f"X has {dim} features, but {type(self).__name__} is expecting {self.n_features_in_} "
                f"features as input{detail}."
            )

    def _needs_patches(self) -> bool:
        return True

    def _prepare_tokens(self, X, *, reset: bool):
        """Hook of :meth:`_validate_tokens`: ``X`` in a layout it reads (3-D or 2-D); ``X`` itself by default.

        A probe that takes other layouts (the multi-layer probe's
        ``(n_clips, n_layers, n_tokens, dim)``) checks them here and returns
        a 3-D view of them, without copying float tokens.
        """
        return X
