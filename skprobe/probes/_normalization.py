"""Token normalisation chosen on held-out clips: the prototypical probe's ``normalize_tokens="auto"``.

A rule fitted to a few token sources does not transfer: the direction
coherence rule left aiSFX's tokens raw, while on a held-out set of real
recordings standardising them served the probe better. So
:func:`select_normalization` lets the data decide, the way
:func:`~skprobe.probes._length.select_length` chooses the attentive probe's
length: on the same 80 % of the training clips, one copy of the untrained
network per candidate normalisation (statistics from those clips only) is
trained, and the candidate whose held-out 20 % score the best macro average
precision wins, the rule's choice unless another beats it by a margin; ``fit``
then trains on all clips with it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ._length import HOLDOUT_FRACTION, _indicator, _logits, _rows
from ._selection import _macro_ap
from ._tokens import TokenSource
from ._training import validation_split

__all__ = ["select_normalization"]


def select_normalization(network: nn.Module, tokens: TokenSource, resident: torch.Tensor | None,
                         targets: torch.Tensor, modes: list[str], *, train: Callable[..., object], max_iter: int,
                         batch_size: int, seed: int, device: torch.device, margin: float = 0.0,
                         ) -> tuple[str, dict]:
    """The mode of ``modes`` whose held-out macro average precision is best, the first one unless beaten by more
    than ``margin``.

    ``network`` is an untrained :class:`~skprobe.probes.base.ProbeNetwork`;
    every candidate is a copy of it (the same initial weights) with its
    ``normalize`` set to the mode, calibrated on the 80 % of the clips it
    trains on through ``train(module, source, targets, max_iter=...,
    resident=...)``, and scored on the other 20 %. The first mode (the
    default's rule) stays unless another scores more than ``margin`` above
    it; among the others ties go to the earlier one.

    Returns
    -------
    best : str
    results : dict
        ``{"normalize_tokens": modes, "holdout_score": scores, "n_holdout": n, "max_iter": max_iter}``.
    """
    kept, held = validation_split(len(tokens), HOLDOUT_FRACTION, targets.numpy() if targets.ndim == 1 else None,
                                  seed)
    fit_source, fit_resident = _rows(tokens, resident, kept)
    eval_source, eval_resident = _rows(tokens, resident, held)
    held_targets = targets[torch.from_numpy(held)]
    scores = []
    for mode in modes:
        candidate = copy.deepcopy(network)
        candidate.normalize = mode
        candidate.calibrate(fit_source if fit_resident is None else fit_resident)
        train(candidate, fit_source, targets[torch.from_numpy(kept)], max_iter=max_iter, resident=fit_resident)
        logits = _logits(candidate.eval(), eval_source, eval_resident, batch_size, device)
        score = _macro_ap(_indicator(held_targets, logits.shape[1]), logits)
        scores.append(score if np.isfinite(score) else -np.inf)
    challenger = 1 + int(np.argmax(scores[1:])) if len(modes) > 1 else 0
    best = modes[challenger] if scores[challenger] > scores[0] + margin else modes[0]
    return best, {"normalize_tokens": list(modes), "holdout_score": scores, "n_holdout": len(held),
                  "max_iter": max_iter, "margin": margin}
