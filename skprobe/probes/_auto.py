"""The measured ``"auto"`` rules of the probes: batch size, learning rate, epochs, token centring.

Each rule is a number measured on the panel of ``benchmarks/bench_defaults_panel.py``
(``docs/benchmarks/defaults.md``); the estimators only call these functions.
"""

from __future__ import annotations

import torch

__all__ = ["AUTO_CENTER_COHERENCE", "AUTO_CENTER_OFFSET_RATIO", "auto_batch_size", "auto_learning_rate",
           "auto_max_iter", "direction_coherence", "offset_ratio"]

#: ``normalize_tokens="auto"`` centres when the tokens' common offset carries more than this share of
#: their variance (:func:`offset_ratio`); measured on the panel of ``docs/benchmarks/defaults.md``.
AUTO_CENTER_OFFSET_RATIO = 0.25

#: The prototypical probe's ``normalize_tokens="auto"`` centres when a token's mean cosine similarity to the
#: tokens' mean direction exceeds this (:func:`direction_coherence`); its head compares directions only.
AUTO_CENTER_COHERENCE = 0.67

#: ``learning_rate="auto"`` uses the smallest dimension it was measured at for narrower inputs.
_AUTO_LR_MIN_FAN_IN = 64

#: ``max_iter="auto"``: this many epochs, or more (up to the second number) where a probe's minimum of
#: optimiser steps needs them.
_AUTO_EPOCHS = (30, 90)

#: Bounds of ``batch_size="auto"`` and the number of steps per epoch it aims at.
_AUTO_BATCH = (32, 128, 8)

def auto_batch_size(n_clips: int) -> int:
    """``batch_size="auto"``: ``ceil(n_clips / 8)`` clipped to [32, 128].

    >>> auto_batch_size(200), auto_batch_size(600), auto_batch_size(20000)
    (32, 75, 128)
    """
    low, high, steps = _AUTO_BATCH
    return int(min(high, max(low, -(-n_clips // steps))))


def auto_learning_rate(rate_times_fan_in: float, fan_in: int) -> float:
    """``learning_rate="auto"``: ``rate_times_fan_in / fan_in``, the fan-in floored at 64.

    With Adam every weight moves by about the learning rate per step, so a
    unit's output moves by about ``learning_rate x fan_in`` on normalised
    inputs; keeping that product fixed gives one setting for every embedding
    dimension (the Adam rule of maximal-update parametrisation). Measured from
    64 to 1,024 dimensions (``docs/benchmarks/defaults.md``); narrower inputs
    get the 64-dimension rate.

    >>> auto_learning_rate(10.0, 1024), auto_learning_rate(10.0, 64), auto_learning_rate(10.0, 2)
    (0.009765625, 0.15625, 0.15625)
    """
    return float(rate_times_fan_in / max(int(fan_in), _AUTO_LR_MIN_FAN_IN))


def offset_ratio(mean: torch.Tensor, var: torch.Tensor) -> float:
    """``|mean|^2 / sum of per-dimension variances``, from :func:`raw_moments`.

    How far the tokens sit from the origin compared with how far they spread:
    near 0 for zero-mean tokens, 0.5 when the common offset carries a third
    of the second moment.

    >>> import torch
    >>> offset_ratio(torch.tensor([3.0, 4.0]), torch.tensor([25.0, 25.0]))
    0.5
    """
    spread = float(var.double().sum())
    return float(mean.double().square().sum()) / spread if spread > 0 else 0.0


def direction_coherence(mean: torch.Tensor, unit_mean: torch.Tensor) -> float:
    """Mean cosine similarity between a token and the tokens' mean, from :func:`raw_moments`.

    ``E[x / |x|] . m / |m|``: near 0 when tokens point every way, 1 when
    they all point along their mean. Unlike :func:`offset_ratio` it ignores
    how the norms vary, which is what a cosine-similarity head sees.

    >>> import torch
    >>> direction_coherence(torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5]))
    0.7071067811865475
    """
    norm = float(mean.double().norm())
    return float(unit_mean.double() @ mean.double()) / norm if norm > 0 else 0.0


def auto_max_iter(n_fit: int, batch_size: int, min_steps: int) -> int:
    """``max_iter="auto"``: 30 epochs, or more (at most 90) where ``min_steps`` optimiser steps need them.

    >>> auto_max_iter(200, 32, 0), auto_max_iter(200, 32, 720), auto_max_iter(20000, 128, 720)
    (30, 90, 30)
    """
    steps_per_epoch = -(-n_fit // batch_size)
    low, high = _AUTO_EPOCHS
    return min(high, max(low, -(-min_steps // steps_per_epoch)))
