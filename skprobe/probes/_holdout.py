"""Settings chosen on held-out clips: the training length and the token normalisation of small sets.

A rule fitted to a few token sources does not always transfer, so on small
sets the probes let the data decide between a few candidate settings:

- the attentive probe's ``max_iter="auto"``: its best length depends on the
  tokens (on YAMNet's layer 11 it scores 0.213 after 30 epochs and 0.390
  after 60, on CREPE's note scenes 0.745 and 0.716; the validation loss is no
  guide, it bottoms out within a few epochs where the average precision keeps
  rising);
- ``normalize_tokens="auto"`` of the attentive and prototypical probes: the
  offset and direction rules misjudge some sources (the direction rule left
  aiSFX's tokens raw where standardising them served the probe better; the
  offset rule centres Whisper's tokens, which costs the attentive probe).

:func:`holdout_choice` trains one copy of the untrained network per
candidate on the same 80 % of the training clips (normalisation statistics
from those clips only) and scores each on the other 20 % by macro average
precision. The default's candidates (the rule's normalisation, at each
candidate length) are compared among themselves; another candidate wins only
when it beats the best of them by more than a margin, which each probe
measures for its own race. ``fit`` then trains on all clips with the winner.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from ._batches import batch_logits
from ._network import ProbeNetwork
from ._plan import TrainingPlan
from ._selection import _macro_ap
from ._tokens import TokenSource
from ._training import train_module, validation_split

__all__ = ["HOLDOUT_FRACTION", "NORMALIZATION_CANDIDATES", "NORMALIZATION_SELECTION_CLIPS", "choose_on_holdout",
           "holdout_choice", "normalization_challengers", "pick"]

#: Share of the training clips held out to score each candidate.
HOLDOUT_FRACTION = 0.2

#: ``normalize_tokens="auto"`` chooses among these on held-out clips (the rule's choice first); ``"none"`` is
#: left out so that the choice does not depend on the tokens' global scale (``"scale"`` is ``"none"`` divided
#: by one number).
NORMALIZATION_CANDIDATES = ("scale", "center", "standard")
#: Sets with at least as many clips as the first number and fewer than the second make the normalisation choice;
#: smaller sets hold out too few clips to tell the modes apart, larger ones follow the rule (their training is
#: already 30 epochs long, so the choice would cost more than a fit).
NORMALIZATION_SELECTION_CLIPS = (200, 3000)


def pick(scores: Sequence[float], n_default: int, margin: float) -> int:
    """Index of the winner: the best of the first ``n_default`` scores unless another beats it by more than
    ``margin``; ties go to the earlier candidate.

    >>> pick([0.5, 0.6, 0.64], n_default=2, margin=0.05), pick([0.5, 0.6, 0.66], n_default=2, margin=0.05)
    (1, 2)
    """
    scores = np.asarray(scores, dtype=float)
    best = int(np.argmax(scores[:n_default]))
    if len(scores) == n_default:
        return best
    challenger = n_default + int(np.argmax(scores[n_default:]))
    return challenger if scores[challenger] > scores[best] + margin else best


def holdout_choice(network: nn.Module, tokens: TokenSource, resident: torch.Tensor | None, targets: torch.Tensor,
                   candidates: Sequence[tuple[str, int]], *, plan: TrainingPlan, criterion: nn.Module,
                   n_default: int, margin: float, batch_size: int, train: Callable[..., object] = train_module,
                   groups: np.ndarray | None = None) -> tuple[int, list[float], int]:
    """Train and score ``candidates`` (normalisation, epochs) on one held-out split; the winner by :func:`pick`.

    ``network`` is an untrained :class:`~skprobe.probes.base.ProbeNetwork`;
    every candidate is a copy of it (the same initial weights) with its
    ``normalize`` set to the candidate's mode, calibrated on the 80 % of the
    clips it trains on through ``train(module, source, targets, plan,
    criterion=..., resident=...)`` (:func:`~skprobe.probes._training.train_module`)
    on ``plan`` with the candidate's epochs, and scored in batches of
    ``batch_size`` clips on the other 20 % (stratified for single-label
    ``targets``, of whole groups with ``groups``; the split is drawn from
    ``plan.seed``: :func:`~skprobe.probes._training.validation_split`). The first
    ``n_default`` candidates are the default's; another wins only by more
    than ``margin``.

    Returns
    -------
    best : int
        Index of the winning candidate.
    scores : list of float
        Held-out macro average precision of each candidate (``-inf`` where it
        is undefined).
    n_holdout : int
        Clips held out.
    """
    kept, held = validation_split(len(tokens), HOLDOUT_FRACTION, targets.numpy() if targets.ndim == 1 else None,
                                  plan.seed, groups)
    fit_source, fit_resident = _rows(tokens, resident, kept)
    eval_source, eval_resident = _rows(tokens, resident, held)
    fit_targets, held_targets = targets[torch.from_numpy(kept)], targets[torch.from_numpy(held)]
    scores = []
    for mode, max_iter in candidates:
        candidate = copy.deepcopy(network)
        candidate.normalize = mode
        candidate.calibrate(fit_source if fit_resident is None else fit_resident)
        train(candidate, fit_source, fit_targets, replace(plan, max_iter=max_iter), criterion=criterion,
              resident=fit_resident)
        logits = batch_logits(candidate.eval(), eval_source, eval_resident, batch_size, plan.device)
        score = _macro_ap(_indicator(held_targets, logits.shape[1]), logits)
        scores.append(float(score) if np.isfinite(score) else -np.inf)
    return pick(scores, n_default, margin), scores, len(held)


def normalization_challengers(normalize_tokens: str, rule: str, n_clips: int) -> list[str]:
    """The modes that challenge the rule's choice ``rule`` for ``normalize_tokens="auto"`` on sets of
    :data:`NORMALIZATION_SELECTION_CLIPS` clips (none otherwise).

    >>> normalization_challengers("auto", "center", 600), normalization_challengers("auto", "center", 100)
    (['scale', 'standard'], [])
    """
    low, high = NORMALIZATION_SELECTION_CLIPS
    if normalize_tokens != "auto" or not low <= n_clips < high:
        return []
    return [mode for mode in NORMALIZATION_CANDIDATES if mode != rule]


def choose_on_holdout(network: ProbeNetwork, tokens: TokenSource, resident: torch.Tensor | None,
                      targets: torch.Tensor, candidates: Sequence[tuple[str, int]], *, plan: TrainingPlan,
                      criterion: nn.Module, n_default: int, margin: float, batch_size: int,
                      groups: np.ndarray | None = None) -> tuple[int, list[float], int]:
    """Race ``candidates`` (normalisation, epochs) on held-out clips and switch ``network`` to the winner's
    normalisation.

    :func:`holdout_choice` of copies of ``network``'s untrained head, in a
    forked random state: the choice leaves the random state as it found it,
    so the final fit is the fit with the chosen settings. ``network`` then
    gets the winner's normalisation with statistics of all ``tokens`` (the
    winner's epochs are the caller's to use). Returns what
    :func:`holdout_choice` returns.
    """
    untrained = ProbeNetwork(network.head, network.prefix_tokens, "none")
    device = plan.device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        best, scores, n_holdout = holdout_choice(untrained, tokens, resident, targets, candidates, plan=plan,
                                                 criterion=criterion, n_default=n_default, margin=margin,
                                                 batch_size=batch_size, groups=groups)
    mode = candidates[best][0]
    if mode != network.normalize:  # statistics of all clips for the winner
        network.normalize = mode
        network.token_mean = network.token_scale = None
        network.calibrate(tokens if resident is None else resident)
    return best, scores, n_holdout


def _rows(tokens: TokenSource, resident: torch.Tensor | None, idx: np.ndarray):
    """Clips ``idx`` of ``tokens`` as a source (a view, no copy) and of ``resident`` on its device."""
    on_device = None if resident is None else resident[torch.from_numpy(idx).to(resident.device)]
    return tokens.subset(idx), on_device


def _indicator(targets: torch.Tensor, n_outputs: int) -> np.ndarray:
    if targets.ndim == 2:
        return targets.numpy()
    return np.eye(n_outputs, dtype=np.int64)[targets.numpy()]
