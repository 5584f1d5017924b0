"""Training length chosen on held-out clips: ``max_iter="auto"`` of the attentive probe on small sets.

On a small set the attentive probe's best length depends on the tokens: on
YAMNet's layer 11 it scores 0.213 after 30 epochs and 0.390 after 60, while
on CREPE's note scenes 60 epochs overfit (0.745 after 30, 0.716 after 60;
``docs/benchmarks/defaults.md``). The validation loss is no guide there (it
bottoms out within a few epochs on the YAMNet sources, whose average
precision keeps rising), so :func:`select_length` trains the network once per
candidate length on 80 % of the clips and keeps the length whose held-out
clips score the best macro average precision; ``fit`` then trains on all
clips for that length.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ._batches import inference_batches
from ._selection import _macro_ap
from ._tokens import TokenSource, TokenView
from ._training import validation_split

__all__ = ["HOLDOUT_FRACTION", "select_length"]

#: Share of the training clips held out to score each candidate length.
HOLDOUT_FRACTION = 0.2


def select_length(network: nn.Module, tokens: TokenSource, resident: torch.Tensor | None, targets: torch.Tensor,
                  lengths: list[int], *, train: Callable[..., object], batch_size: int, seed: int,
                  device: torch.device) -> tuple[int, dict]:
    """The candidate of ``lengths`` (epochs) whose held-out macro average precision is best.

    ``network`` is calibrated and untrained; every candidate trains a copy of
    it (the same initial weights) through ``train(module, source, targets,
    max_iter=..., resident=...)`` on the same 80 % of the clips, and is scored
    on the other 20 %. Ties go to the earlier (shorter) candidate.

    Returns
    -------
    best : int
    results : dict
        ``{"max_iter": lengths, "holdout_score": scores, "n_holdout": n}``.
    """
    n = len(tokens)
    kept, held = validation_split(n, HOLDOUT_FRACTION, targets.numpy() if targets.ndim == 1 else None, seed)
    fit_source, fit_resident = _rows(tokens, resident, kept)
    eval_source, eval_resident = _rows(tokens, resident, held)
    scores = []
    for length in lengths:
        candidate = copy.deepcopy(network)
        train(candidate, fit_source, targets[torch.from_numpy(kept)], max_iter=length, resident=fit_resident)
        logits = _logits(candidate.eval(), eval_source, eval_resident, batch_size, device)
        score = _macro_ap(_indicator(targets[torch.from_numpy(held)], logits.shape[1]), logits)
        scores.append(score if np.isfinite(score) else -np.inf)
    best = lengths[int(np.argmax(scores))]
    return best, {"max_iter": list(lengths), "holdout_score": scores, "n_holdout": len(held)}


def _rows(tokens: TokenSource, resident: torch.Tensor | None, idx: np.ndarray):
    """Clips ``idx`` of ``tokens`` as a source (a view, no copy) and of ``resident`` on its device."""
    data = tokens.data
    view = TokenView(data.data, data.indices[idx]) if isinstance(data, TokenView) else TokenView(data, idx)
    on_device = None if resident is None else resident[torch.from_numpy(idx).to(resident.device)]
    return TokenSource(view, tokens.tokens), on_device


def _indicator(targets: torch.Tensor, n_outputs: int) -> np.ndarray:
    if targets.ndim == 2:
        return targets.numpy()
    return np.eye(n_outputs, dtype=np.int64)[targets.numpy()]


@torch.no_grad()
def _logits(network: nn.Module, source: TokenSource, resident: torch.Tensor | None, batch_size: int,
            device: torch.device) -> np.ndarray:
    if resident is not None:
        batches = ((len(batch), batch) for batch in resident.split(batch_size))
    else:
        batches = inference_batches(source, batch_size, device)
    return torch.cat([network(batch.to(device))[:n].float().cpu() for n, batch in batches]).numpy()
