"""Settings chosen on internal folds: the linear probe's ``cv``.

A linear layer on pooled features is cheap to train, but its best learning
rate, input normalisation and length depend on the data beyond its
dimension (``docs/benchmarks/defaults.md``). :func:`select_settings` trains
every candidate setting on ``cv`` folds of the training clips and returns the
one with the best mean validation score (macro average precision), in the
spirit of ``LogisticRegressionCV``.

All candidates of one training length, on all folds, are trained together,
as one batched model, in a plain torch loop over features already on the
device: the candidates of a fold see the same batches, each with its own
learning rate (a fixed factor on its weights, see ``_train_group``) and its
own normalised view of the features; the folds' layers are stacked along a
leading axis, each step taking one batch of every fold's own rows; and the
summed loss gives every candidate on every fold exactly its own gradient. A
selection costs about as much as a few fits of one linear layer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from numbers import Integral

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


def _folds(targets: np.ndarray, kind: str, cv, seed: int, groups: np.ndarray | None = None,
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train and validation rows of each fold: ``cv`` an int (shuffled folds), a splitter or an iterable of splits.

    An int gives shuffled ``KFold`` (``StratifiedKFold`` for single-label
    targets whose every class has ``cv`` clips), or shuffled ``GroupKFold``
    when ``groups`` are given, so that clips of one group never sit on both
    sides of a split; anything else goes through ``check_cv`` and its
    ``split(X, targets, groups)``.
    """
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, check_cv

    n = len(targets)
    if isinstance(cv, Integral):
        if groups is not None:
            return list(GroupKFold(cv, shuffle=True, random_state=seed).split(np.zeros(n), targets, groups))
        if kind != "multilabel" and np.bincount(targets).min() >= cv:
            splitter = StratifiedKFold(cv, shuffle=True, random_state=seed)
            return list(splitter.split(np.zeros(n), targets))
        return list(KFold(cv, shuffle=True, random_state=seed).split(np.zeros(n)))
    return list(check_cv(cv).split(np.zeros((n, 1)), targets, groups))


class _Folds:
    """Every fold's train and validation rows of the features, normalised per fold and mode on the fly.

    Rows are gathered and normalised per batch from the one features tensor,
    so a selection adds no copy of the features to the memory of ``fit``.
    """

    def __init__(self, X: torch.Tensor, folds: list[tuple[torch.Tensor, torch.Tensor]], modes: list[str]) -> None:
        from .base import feature_moments

        self.X = X
        self.train = [train for train, _ in folds]
        self.valid = [valid for _, valid in folds]
        self.stats = {}
        for mode in modes:
            if mode == "none":
                continue
            moments = []
            for train in self.train:
                blocks = (X[train[i : i + 4096]] for i in range(0, len(train), 4096))
                moments.append(tuple(t.to(X.device) for t in feature_moments(blocks, mode)))
            shift, scale = (torch.stack([m[j].reshape(-1) for m in moments])[:, None] for j in (0, 1))
            self.stats[mode] = shift, scale  # (n_folds, 1, n_features) each

    def __len__(self) -> int:
        return len(self.train)

    def batch(self, mode: str, rows: torch.Tensor) -> torch.Tensor:
        """Rows ``(n_folds, b)`` of the features, each fold's normalised with its statistics: ``(n_folds, b, F)``."""
        return self._normalised(self.X[rows], mode, slice(None))

    def validation(self, mode: str, fold: int) -> torch.Tensor:
        """Fold ``fold``'s validation rows, normalised for ``mode``: ``(n_valid, F)``."""
        return self._normalised(self.X[self.valid[fold]], mode, fold)

    def _normalised(self, x: torch.Tensor, mode: str, fold: int | slice) -> torch.Tensor:
        if mode == "none":
            return x
        shift, scale = self.stats[mode]
        return (x - shift[fold]) / scale[fold]

    def epoch(self) -> torch.Tensor:
        """One epoch's order of every fold's training rows, ``(n_folds, n)`` for the largest fold's ``n``.

        A smaller fold fills its order up with a few of its rows drawn again, so that all folds take the
        same steps (the folds of a ``KFold`` differ by one row at most).
        """
        n = max(len(train) for train in self.train)
        order = []
        for train in self.train:
            perm = torch.randperm(len(train), device=train.device)
            if len(train) < n:
                perm = torch.cat([perm, perm[torch.randint(len(train), (n - len(train),), device=train.device)]])
            order.append(train[perm])
        return torch.stack(order)


def _macro_ap(indicator: np.ndarray, scores: np.ndarray) -> float:
    """:func:`skprobe.metrics.macro_map` over the classes with positives and negatives (NaN if there is none)."""
    from ..metrics import macro_map

    keep = (indicator.sum(0) > 0) & (indicator.sum(0) < len(indicator))
    if not keep.any() or not np.isfinite(scores).all():
        return float("nan")
    return macro_map(indicator[:, keep], scores[:, keep])


def _bundles(folds: list[tuple[np.ndarray, np.ndarray]]) -> list[list[int]]:
    """Folds trained together: all of them when their training sets differ by at most 1 % (one row for
    ``KFold``), else each alone (``TimeSeriesSplit``, uneven groups), so no fold's epochs are stretched."""
    sizes = [len(train) for train, _ in folds]
    if max(sizes) - min(sizes) <= max(1, min(sizes) // 100):
        return [list(range(len(folds)))]
    return [[f] for f in range(len(folds))]


def _train_group(candidates: list[Candidate], folds: _Folds, y: torch.Tensor, criterion: nn.Module, *,
                 n_outputs: int, batch_size: int, weight_decay: float, epochs: int) -> list[list[torch.Tensor]]:
    """Train one linear layer per candidate and fold (all ``epochs`` long) together; their validation logits.

    Returns ``out[fold][candidate]``, each ``(n_valid, n_outputs)``. The folds' layers are stacked along a
    leading axis: every step takes one batch of each fold's own training rows, so the steps' fixed costs
    are paid once for all folds.
    """
    n_folds, dim = len(folds), folds.X.shape[1]
    device = folds.X.device
    modes = sorted({c.normalize for c in candidates})
    order = [i for m in modes for i, c in enumerate(candidates) if c.normalize == m]  # each mode's slice contiguous
    k = len(candidates)
    # Candidate j's weights are rate_j / base * V_j with V trained at the base rate: with Adam every step moves
    # V by about the base rate whatever the gradient's scale, so weights move at rate_j, as in a fit at rate_j
    # (AdamW's decay, lr x weight_decay per step, stays at the base rate: 1e-6 per step at the defaults).
    base = max(c.learning_rate for c in candidates)
    factor = torch.tensor([candidates[i].learning_rate / base for i in order], device=device)
    bound = 1.0 / math.sqrt(dim)  # nn.Linear's initialisation of the weights
    V = nn.Parameter(torch.empty(n_folds, dim, k, n_outputs, device=device).uniform_(-bound, bound)
                     / factor[:, None])
    c = nn.Parameter(torch.empty(n_folds, k, n_outputs, device=device).uniform_(-bound, bound) / factor[:, None])
    optimizer = torch.optim.AdamW([V, c], lr=base, weight_decay=weight_decay, fused=device.type in ("cpu", "cuda"))
    n = max(len(train) for train in folds.train)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * -(-n // batch_size)))
    spans, start = [], 0
    for mode in modes:
        size = sum(candidates[i].normalize == mode for i in order)
        spans.append((mode, slice(start, start + size)))
        start += size

    def logits(rows: torch.Tensor) -> torch.Tensor:
        W, b = V * factor[:, None], c * factor[:, None]
        out = []
        for mode, span in spans:  # one (folds, rows, F) x (folds, F, k_mode * C) product per normalisation
            x = folds.batch(mode, rows)
            product = torch.bmm(x, W[:, :, span].reshape(n_folds, dim, -1))
            out.append(product.view(n_folds, x.shape[1], -1, n_outputs) + b[:, None, span])
        return torch.cat(out, dim=2)  # (folds, rows, k, n_outputs), candidates in the order of `order`

    for _ in range(epochs):
        epoch = folds.epoch()
        for first in range(0, n, batch_size):
            rows = epoch[:, first : first + batch_size]
            out = logits(rows)
            target = y[rows.reshape(-1)]
            # one loss over the stacked folds and candidates; times folds x k so each gets exactly its own
            # mean-loss gradient
            loss = criterion(out.reshape(-1, n_outputs), target.repeat_interleave(k, dim=0)) * (k * n_folds)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    results = []
    with torch.no_grad():
        W, b = V * factor[:, None], c * factor[:, None]
        for f in range(n_folds):
            final = torch.cat([(folds.validation(mode, f) @ W[f][:, span].reshape(dim, -1)).view(
                len(folds.valid[f]), -1, n_outputs) + b[f, span] for mode, span in spans], dim=1)
            out = [None] * k
            for position, i in enumerate(order):
                out[i] = final[:, position]
            results.append(out)
    return results


def select_settings(features: np.ndarray, targets: torch.Tensor, kind: str, criterion: nn.Module,
                    candidates: list[Candidate], *, n_outputs: int, batch_size: int, weight_decay: float, cv,
                    seed: int, device: torch.device, max_clips: int | None = None, groups: np.ndarray | None = None,
                    folds: list[tuple[np.ndarray, np.ndarray]] | None = None) -> tuple[Candidate, dict]:
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
    n_outputs, batch_size, weight_decay, seed, device
        As in the final fit.
    cv : int, cross-validation splitter or iterable of splits
        An int gives shuffled folds (stratified for single-label targets
        when every class has ``cv`` clips; grouped when ``groups`` are
        given); a splitter is called as ``split(X, targets, groups)``.
    max_clips : int, optional
        Select on a random subset of this many clips of larger sets, which
        bounds the cost (it grows with the clips, as a fit does).
    groups : ndarray of shape (n_clips,), optional
        Group labels of the clips (e.g. the recording each was cut from).
    folds : list of (train, validation) index arrays, optional
        The folds themselves (then ``cv``, ``groups`` and ``max_clips`` are
        not used): the linear probe scores its logistic-regression
        candidates on the same folds.

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
    if folds is None and max_clips is not None and len(features) > max_clips:
        subset = np.sort(np.random.default_rng(seed).choice(len(features), max_clips, replace=False))
        features, targets = features[subset], targets[torch.from_numpy(subset)]
        groups = None if groups is None else np.asarray(groups)[subset]
    labels = targets.numpy()
    if folds is None:
        folds = _folds(labels, kind, cv, seed, groups)
    indicator = labels if kind == "multilabel" else np.eye(n_outputs, dtype=np.int8)[labels]
    scores = np.full((len(folds), len(candidates)), np.nan)
    modes = sorted({c.normalize for c in candidates})
    X = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device)
    y = targets.to(device)
    for bundle in _bundles(folds):
        stacked = _Folds(X, [(torch.from_numpy(folds[f][0]).to(device), torch.from_numpy(folds[f][1]).to(device))
                             for f in bundle], modes)
        smallest = min(len(folds[f][0]) for f in bundle)
        for epochs in sorted({c.max_iter for c in candidates}):
            group = [i for i, c in enumerate(candidates) if c.max_iter == epochs]
            outputs = _train_group([candidates[i] for i in group], stacked, y, criterion, n_outputs=n_outputs,
                                   batch_size=min(batch_size, smallest), weight_decay=weight_decay, epochs=epochs)
            for f, fold_outputs in zip(bundle, outputs):
                for i, out in zip(group, fold_outputs):
                    out = out if kind == "multilabel" else torch.log_softmax(out, dim=1)
                    scores[f, i] = _macro_ap(indicator[folds[f][1]], out.double().cpu().numpy())
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
