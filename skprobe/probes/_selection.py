"""Settings chosen on internal folds: the linear probe's ``cv``.

A linear layer on pooled features is cheap to train, but its best learning
rate, input normalisation and length depend on the data beyond its
dimension (``docs/benchmarks/defaults.md``). :func:`select_settings` trains
every candidate setting on ``cv`` folds of the training clips and returns the
one with the best mean validation score (macro average precision), in the
spirit of ``LogisticRegressionCV``.

All candidates of one training length are trained together, as one batched
model, in a plain torch loop over features already on the device: they see
the same batches, each with its own learning rate (a fixed factor on its
weights, see ``_train_group``) and its own normalised view of the features,
and the summed loss gives every candidate exactly its own gradient. A
selection costs about as much as a few fits of one linear layer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["Candidate", "select_settings"]


@dataclass(frozen=True)
class Candidate:
    """One setting of the linear probe: learning rate, feature normalisation, epochs."""

    learning_rate: float
    normalize: str
    max_iter: int


def _folds(targets: np.ndarray, kind: str, cv: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(targets)
    if kind != "multilabel" and np.bincount(targets).min() >= cv:
        splitter = StratifiedKFold(cv, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(n), targets))
    return list(KFold(cv, shuffle=True, random_state=seed).split(np.zeros(n)))


class _Fold:
    """One fold's train and validation rows of the features, normalised per mode on the fly.

    Rows are gathered and normalised per batch from the one features tensor,
    so a selection adds no copy of the features to the memory of ``fit``.
    """

    def __init__(self, X: torch.Tensor, train: torch.Tensor, valid: torch.Tensor, modes: list[str]) -> None:
        from .base import feature_moments

        self.X, self.rows = X, (train, valid)
        self.stats = {}
        for mode in modes:
            if mode != "none":
                blocks = (X[train[i : i + 4096]] for i in range(0, len(train), 4096))
                self.stats[mode] = tuple(t.to(X.device) for t in feature_moments(blocks, mode))

    def view(self, mode: str, part: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``rows`` (all when None) of part 0 (train) or 1 (validation), normalised for ``mode``."""
        index = self.rows[part] if rows is None else self.rows[part][rows]
        x = self.X[index]
        if mode == "none":
            return x
        shift, scale = self.stats[mode]
        return (x - shift) / scale


def _macro_ap(indicator: np.ndarray, scores: np.ndarray) -> float:
    """:func:`skprobe.metrics.macro_map` over the classes with positives and negatives (NaN if there is none)."""
    from ..metrics import macro_map

    keep = (indicator.sum(0) > 0) & (indicator.sum(0) < len(indicator))
    if not keep.any() or not np.isfinite(scores).all():
        return float("nan")
    return macro_map(indicator[:, keep], scores[:, keep])


def _train_group(candidates: list[Candidate], fold: _Fold, y_train: torch.Tensor, criterion: nn.Module, *,
                 n_outputs: int, batch_size: int, weight_decay: float, epochs: int) -> list[torch.Tensor]:
    """Train one linear layer per candidate (all ``epochs`` long) together; their validation logits."""
    n, dim = len(fold.rows[0]), fold.X.shape[1]
    device = fold.X.device
    modes = sorted({c.normalize for c in candidates})
    order = [i for m in modes for i, c in enumerate(candidates) if c.normalize == m]  # each mode's slice contiguous
    k = len(candidates)
    # Candidate j's weights are rate_j / base * V_j with V trained at the base rate: with Adam every step moves
    # V by about the base rate whatever the gradient's scale, so weights move at rate_j, as in a fit at rate_j
    # (AdamW's decay, lr x weight_decay per step, stays at the base rate: 1e-6 per step at the defaults).
    base = max(c.learning_rate for c in candidates)
    factor = torch.tensor([candidates[i].learning_rate / base for i in order], device=device)
    bound = 1.0 / math.sqrt(dim)  # nn.Linear's initialisation of the weights
    V = nn.Parameter(torch.empty(dim, k, n_outputs, device=device).uniform_(-bound, bound) / factor[:, None])
    c = nn.Parameter(torch.empty(k, n_outputs, device=device).uniform_(-bound, bound) / factor[:, None])
    optimizer = torch.optim.AdamW([V, c], lr=base, weight_decay=weight_decay)
    steps_per_epoch = -(-n // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    spans, start = [], 0
    for mode in modes:
        size = sum(candidates[i].normalize == mode for i in order)
        spans.append((mode, slice(start, start + size)))
        start += size

    def logits(part: int, rows: torch.Tensor | None) -> torch.Tensor:
        W, b = V * factor[:, None], c * factor[:, None]
        out = []
        for mode, span in spans:  # one (rows, F) x (F, k_mode * C) product per normalisation
            x = fold.view(mode, part, rows)
            out.append((x @ W[:, span].reshape(dim, -1)).view(len(x), -1, n_outputs) + b[span])
        return torch.cat(out, dim=1)  # (rows, k, n_outputs), candidates in the order of `order`

    for _ in range(epochs):
        perm = torch.randperm(n, device=device)
        for first in range(0, n, batch_size):
            rows = perm[first : first + batch_size]
            out = logits(0, rows)
            target = y_train[rows]
            # one loss over the stacked candidates; times k so each gets exactly its own mean-loss gradient
            loss = criterion(out.reshape(-1, n_outputs), target.repeat_interleave(k, dim=0)) * k
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        final = logits(1, None)
    out = [None] * k
    for position, i in enumerate(order):
        out[i] = final[:, position]
    return out


def select_settings(features: np.ndarray, targets: torch.Tensor, kind: str, criterion: nn.Module,
                    candidates: list[Candidate], *, n_outputs: int, batch_size: int, weight_decay: float, cv: int,
                    seed: int, device: torch.device, max_clips: int | None = None) -> tuple[Candidate, dict]:
    """The candidate with the best mean validation macro AP over ``cv`` folds of ``features``.

    Parameters
    ----------
    features : ndarray of shape (n_clips, n_features)
        Pooled features of the training clips.
    targets : Tensor
        Class indices ``(n_clips,)`` (``kind`` binary or multiclass, softmax
        loss) or a 0/1 indicator ``(n_clips, n_outputs)``.
    kind : str
        ``"multilabel"`` for an indicator; anything else (``"single-label"``)
        for class indices.
    criterion : nn.Module
        The probe's training loss (mean over the batch).
    candidates : list of Candidate
        In order of preference: ties go to the earlier one.
    n_outputs, batch_size, weight_decay, cv, seed, device
        As in the final fit; ``cv`` folds, stratified for single-label
        targets when every class has ``cv`` clips.
    max_clips : int, optional
        Select on a random subset of this many clips of larger sets, which
        bounds the cost (it grows with the clips, as a fit does).

    Returns
    -------
    best : Candidate
    results : dict
        ``learning_rate``, ``normalize_tokens``, ``max_iter``, ``mean_score``,
        ``std_score`` (lists, one entry per candidate) and ``rank``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skprobe.probes.losses import make_loss
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(90, 4)).astype("float32")
    >>> y = torch.from_numpy((X[:, 0] > 0).astype("int64"))
    >>> ce = make_loss("ce", gamma_neg=0, gamma_pos=0, clip=0)
    >>> best, results = select_settings(X, y, "single-label", ce, [Candidate(1e-3, "center", 5),
    ...     Candidate(1e-1, "center", 5)], n_outputs=2, batch_size=32, weight_decay=0.0, cv=3, seed=0,
    ...     device=torch.device("cpu"))
    >>> best.learning_rate, len(results["mean_score"])
    (0.1, 2)
    """
    if max_clips is not None and len(features) > max_clips:
        subset = np.sort(np.random.default_rng(seed).choice(len(features), max_clips, replace=False))
        features, targets = features[subset], targets[torch.from_numpy(subset)]
    labels = targets.numpy()
    folds = _folds(labels, kind, cv, seed)
    indicator = labels if kind == "multilabel" else np.eye(n_outputs, dtype=np.int8)[labels]
    scores = np.full((len(folds), len(candidates)), np.nan)
    modes = sorted({c.normalize for c in candidates})
    X = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device)
    y = targets.to(device)
    for f, (train, valid) in enumerate(folds):
        train_t, valid_t = torch.from_numpy(train).to(device), torch.from_numpy(valid).to(device)
        fold = _Fold(X, train_t, valid_t, modes)
        for epochs in sorted({c.max_iter for c in candidates}):
            group = [i for i, c in enumerate(candidates) if c.max_iter == epochs]
            outputs = _train_group([candidates[i] for i in group], fold, y[train_t], criterion,
                                   n_outputs=n_outputs, batch_size=min(batch_size, len(train)),
                                   weight_decay=weight_decay, epochs=epochs)
            for i, out in zip(group, outputs):
                out = out if kind == "multilabel" else torch.log_softmax(out, dim=1)
                scores[f, i] = _macro_ap(indicator[valid], out.double().cpu().numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a candidate without any scored fold: NaN
        mean, std = np.nanmean(scores, axis=0), np.nanstd(scores, axis=0)
    ranked = np.where(np.isfinite(mean), mean, -np.inf)
    best = int(np.argmax(ranked))  # first of the best: candidates come in order of preference
    order = np.argsort(-ranked, kind="stable")
    rank = np.empty(len(candidates), dtype=int)
    rank[order] = np.arange(1, len(candidates) + 1)
    results = {
        "learning_rate": [c.learning_rate for c in candidates],
        "normalize_tokens": [c.normalize for c in candidates],
        "max_iter": [c.max_iter for c in candidates],
        "mean_score": mean.tolist(),
        "std_score": std.tolist(),
        "rank": rank.tolist(),
    }
    return candidates[best], results
