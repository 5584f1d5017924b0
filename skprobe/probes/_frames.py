"""Frame-wise class scores from probes trained on clip labels.

A probe trained on weak (clip-level) labels pools its evidence over all
patch tokens of a clip. Its *frame scores* keep the time axis: the patch
tokens are laid out on the encoder's time x frequency grid, the head pools
over frequency only, once per time step, and the same trained layers turn
each frame's pooled evidence into class logits ``(n_clips, n_frames,
n_classes)``. For the prototypical probe this is the frame-wise "protobin" of
Ghaffari, Rauch et al. (BAT): the similarity map is max-pooled over frequency
per frame and the same ``Linear(K -> C)`` is applied per frame.

A head supports frame scores by implementing ``frame_logits(prefix, grid)``,
with ``grid`` the normalised patch tokens as ``(B, ..., T, F, D)`` and the
result ``(B, T, C)``; :class:`FrameScoresMixin` gives every probe whose head
has it the public methods. The probes know arrays only: the grid arrives as a
*layout*, any object with ``n_time``, ``n_freq`` and ``order`` attributes
(:class:`skprobe.TokenLayout`, e.g. ``FrozenEncoderTransformer.layouts_[0]``)
or an ``(n_time, n_freq)`` tuple of a time-major token order.
"""

from __future__ import annotations

from numbers import Integral
from typing import NamedTuple

import numpy as np
import torch
from scipy.special import expit, softmax

__all__ = ["FrameGrid", "FrameScoresMixin", "frame_grid", "patch_grid"]


class FrameGrid(NamedTuple):
    """The patch-token grid of one clip: ``n_time`` frames of ``n_freq`` tokens, flattened in ``order``."""

    n_time: int
    n_freq: int
    order: str = "time_freq"


def frame_grid(layout) -> FrameGrid:
    """A :class:`FrameGrid` from a token layout or an ``(n_time, n_freq)`` tuple.

    Raises
    ------
    ValueError
        If ``layout`` is neither, or its sizes are not positive integers.

    Examples
    --------
    >>> frame_grid((32, 2))
    FrameGrid(n_time=32, n_freq=2, order='time_freq')
    """
    if all(hasattr(layout, a) for a in ("n_time", "n_freq")):
        grid = FrameGrid(layout.n_time, layout.n_freq, getattr(layout, "order", "time_freq"))
    elif isinstance(layout, (tuple, list)) and len(layout) == 2:
        grid = FrameGrid(*layout)
    else:
        raise ValueError(
            f"layout must be a TokenLayout (e.g. FrozenEncoderTransformer.layouts_[0]) or an (n_time, n_freq) "
            f"tuple, got {layout!r}")
    if not all(isinstance(n, Integral) and n >= 1 for n in grid[:2]):
        raise ValueError(f"layout: n_time and n_freq must be positive integers, got {tuple(grid[:2])}")
    if grid.order not in ("time_freq", "freq_time"):
        raise ValueError(f"layout: order must be 'time_freq' or 'freq_time', got {grid.order!r}")
    return FrameGrid(int(grid.n_time), int(grid.n_freq), grid.order)


def patch_grid(patches: torch.Tensor, grid: FrameGrid) -> torch.Tensor:
    """Patch tokens ``(..., M, D)`` as ``(..., n_time, n_freq, D)``, with ``M = n_time * n_freq``.

    Raises
    ------
    ValueError
        If the number of patch tokens does not match the grid.

    Examples
    --------
    >>> patch_grid(torch.arange(12.0).reshape(1, 6, 2), FrameGrid(3, 2)).shape
    torch.Size([1, 3, 2, 2])
    >>> patch_grid(torch.arange(6.0).reshape(1, 6, 1), FrameGrid(3, 2, "freq_time"))[0, :, :, 0].tolist()
    [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    """
    m = patches.shape[-2]
    if m != grid.n_time * grid.n_freq:
        raise ValueError(
            f"X has {m} patch tokens per clip, but the layout's grid is {grid.n_time} x {grid.n_freq} = "
            f"{grid.n_time * grid.n_freq}; pass the layout of the transformer that made X (and the probe's "
            "prefix_tokens of that encoder)")
    lead = patches.shape[:-2]
    if grid.order == "time_freq":
        return patches.reshape(*lead, grid.n_time, grid.n_freq, patches.shape[-1])
    return patches.reshape(*lead, grid.n_freq, grid.n_time, patches.shape[-1]).transpose(-3, -2)


class FrameScoresMixin:
    """``frame_decision_function`` and ``predict_frame_proba`` for probes whose head has ``frame_logits``."""

    def _frame_logits(self, X, layout) -> np.ndarray:
        grid = frame_grid(layout)
        head = getattr(getattr(self, "module_", None), "head", None)
        if head is not None and not hasattr(head, "frame_logits"):
            raise TypeError(f"{type(self).__name__} has no frame-wise scores")
        check = getattr(self, "_check_frame_params", None)
        if check is not None:
            check()

        def fn(network, tokens):
            prefix, patches = network.split(tokens)
            return network.head.frame_logits(prefix, patch_grid(patches, grid))

        return self._batched(X, fn)

    def frame_decision_function(self, X, layout) -> np.ndarray:
        """Class logits per time frame, from a probe trained on clip labels.

        The head pools over frequency only, once per frame of the encoder's
        token grid, and applies its trained layers per frame (see the probe's
        Notes). Frame ``t`` covers ``[t * hop, (t + 1) * hop)`` seconds of the
        clip, ``hop`` being the layout's ``hop_seconds``.

        Parameters
        ----------
        X : array-like of shape (n_clips, n_tokens, dim)
            Token maps, as for :meth:`decision_function`; ``n_tokens`` must be
            ``prefix_tokens + n_time * n_freq`` of ``layout``.
        layout : TokenLayout or (int, int)
            The token grid of ``X``: ``FrozenEncoderTransformer.layouts_[0]``,
            or ``(n_time, n_freq)`` for tokens in time-major order.

        Returns
        -------
        ndarray of shape (n_clips, n_time, n_classes), or (n_clips, n_time) for binary ``y``
            Per-frame logits, shaped like :meth:`decision_function` per frame.

        Examples
        --------
        >>> import numpy as np
        >>> from skprobe import PrototypicalProbeClassifier
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 12, 8)).astype("float32")  # 6 frames x 2 frequency tokens
        >>> Y = (X[:, :, :2].max(axis=1) > 1.5).astype(int)
        >>> clf = PrototypicalProbeClassifier(n_prototypes_per_class=2, max_iter=2, random_state=0).fit(X, Y)
        >>> clf.frame_decision_function(X[:3], layout=(6, 2)).shape
        (3, 6, 2)
        """
        logits = self._frame_logits(X, layout)
        if self.target_type_ == "binary":
            if self._sigmoid_outputs:
                return np.logaddexp(0.0, -logits[..., 0]) - np.logaddexp(0.0, -logits[..., 1])
            return logits[..., 1] - logits[..., 0]
        return logits

    def predict_frame_proba(self, X, layout) -> np.ndarray:
        """Class probabilities per time frame, float64 of shape (n_clips, n_time, n_classes).

        :meth:`frame_decision_function` turned into probabilities as
        :meth:`predict_proba` does per clip: independent sigmoids strictly
        inside (0, 1) for multi-label ``y``, rows summing to 1 per frame for
        single-label ``y``.

        Parameters
        ----------
        X : array-like of shape (n_clips, n_tokens, dim)
        layout : TokenLayout or (int, int)
            See :meth:`frame_decision_function`.

        Examples
        --------
        >>> import numpy as np
        >>> from skprobe import LinearProbeClassifier
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 12, 8)).astype("float32")
        >>> Y = (X[:, :, :2].max(axis=1) > 1.5).astype(int)
        >>> clf = LinearProbeClassifier(max_iter=2, cv=None, random_state=0).fit(X, Y)
        >>> proba = clf.predict_frame_proba(X[:3], layout=(6, 2))
        >>> proba.shape, bool(((proba > 0) & (proba < 1)).all())
        ((3, 6, 2), True)
        """
        logits = self._frame_logits(X, layout)
        if self.target_type_ == "multilabel" or self._sigmoid_outputs:
            eps = np.finfo(np.float64).eps
            proba = np.clip(expit(logits), eps, 1 - eps)
            if self.target_type_ == "multilabel":
                return proba
            return proba / proba.sum(axis=-1, keepdims=True)
        return softmax(logits, axis=-1)
