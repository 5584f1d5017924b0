"""Attentive probe: learned queries cross-attend to the patch tokens (the paper's ``mhca``)."""

from __future__ import annotations

from dataclasses import replace
from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from ._holdout import choose_on_holdout, normalization_challengers
from ._tokens import TokenSource
from .base import (
    _AUTO_EPOCHS,
    NORMALIZATIONS,
    BaseProbeClassifier,
    FitProblem,
    ProbeNetwork,
    store_parameters,
    with_shared_parameters_doc,
)

__all__ = ["AttentiveProbeClassifier", "AttentivePoolingHead", "auto_heads"]

_HEAD_CHOICES = (12, 8, 6, 4, 2, 1)

#: ``max_iter="auto"`` chooses between 30 epochs and the minimum of steps on a held-out split of sets of at
#: least this many clips (20 % of them, 40 clips, score each length); smaller sets train for the minimum.
LENGTH_SELECTION_MIN_CLIPS = 200

#: ``normalize_tokens="auto"``: the offset rule's choice stays unless another mode's held-out macro average
#: precision beats the rule's best length by more than this. On the defaults panel (9 sources x 3 seeds) leads of
#: 0.012 or less went either way on the test clips (-0.056 to +0.002), leads of 0.040 or more gained in 5 of 6
#: (-0.014 to +0.059; docs/benchmarks/defaults.md). The race trains with the final fit's own schedule, so its
#: margin is smaller than the prototypical probe's, whose race uses smaller batches.
NORMALIZATION_MARGIN = 0.02

#: Most trainable parameters the attentive probe builds (2 GB as float32): the key and value
#: projections grow as D^2, so a mistaken token dimension would otherwise try to allocate
#: hundreds of GB before torch fails with a bare allocation error.
MAX_PARAMETERS = 500_000_000


def attentive_parameter_count(dim: int, n_outputs: int, n_queries: int = 1) -> int:
    """Trainable parameters of :class:`AttentivePoolingHead` (queries, key, value, LayerNorm, Linear).

    Examples
    --------
    >>> attentive_parameter_count(768, 10)  # the paper's about 1.2 M
    1189642
    """
    return n_queries * dim + 2 * dim * dim + 2 * dim + dim * n_outputs + n_outputs


def auto_heads(dim: int) -> int:
    """Largest of 12, 8, 6, 4, 2, 1 that divides ``dim`` (12 for ViT-B's 768)."""
    return next(h for h in _HEAD_CHOICES if dim % h == 0)


class AttentivePoolingHead(nn.Module):
    """Multi-head cross-attention pooling, LayerNorm, Linear: ``(B, M, D) -> (B, C)``.

    ``n_queries`` learned queries (init N(0, 0.02^2), no query projection)
    attend over the patch tokens through bias-free key and value projections
    ``D -> D``; the queries' outputs are averaged, normalised and classified.
    """

    def __init__(self, dim: int, n_outputs: int, n_queries: int = 1, n_heads: int = 12) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * 0.02)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, n_outputs)

    def attend(self, patches: torch.Tensor, return_weights: bool = False) -> torch.Tensor:
        """Pooled vector ``(B, D)`` (or the attention weights ``(B, H, nq, M)``).

        Computes exactly ``softmax(q_h . W_k,h x_n / sqrt(d_h))``-weighted sums of
        ``W_v,h x_n``, but in the order that suits a query without projection:
        the query is folded into the key weights (``u_h = W_k,h^T q_h``) and the
        value projection is applied after pooling. That costs ``O(M D H + D^2)``
        per clip instead of ``O(M D^2)`` for projecting every token, which makes
        the probe tens of times faster for M = 64..512 tokens.
        """
        b, m, d = patches.shape
        h, nq = self.n_heads, self.queries.shape[0]
        dh = d // h
        queries = self.queries.reshape(nq, h, dh)
        folded = torch.einsum("qhe,hed->hqd", queries, self.key.weight.reshape(h, dh, d))  # H, nq, D
        logits = torch.einsum("bmd,hqd->bhqm", patches, folded) / dh**0.5
        weights = torch.softmax(logits, dim=-1)  # B, H, nq, M
        if return_weights:
            return weights
        pooled = torch.einsum("bhqm,bmd->bhqd", weights, patches)  # attention-weighted raw tokens
        out = torch.einsum("bhqd,hed->bqhe", pooled, self.value.weight.reshape(h, dh, d))  # values after pooling
        return out.reshape(b, nq, d).mean(dim=1)

    def forward(self, prefix: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(self.attend(patches)))

    def frame_logits(self, prefix: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Per-frame logits ``(B, T, C)`` of patch tokens on their grid ``(B, T, F, D)``.

        The learned queries attend over each frame's frequency tokens alone
        (the softmax runs over ``F`` instead of all ``T * F`` patches), and
        the pooled vector goes through the same LayerNorm and Linear.
        """
        b, t, f, d = grid.shape
        return self.linear(self.norm(self.attend(grid.reshape(b * t, f, d)))).reshape(b, t, -1)


@with_shared_parameters_doc
class AttentiveProbeClassifier(BaseProbeClassifier):
    """Attentive probe: learned queries pool the patch tokens by cross-attention.

    The paper's ``mhca`` baseline: one learned query (no query projection),
    key and value projections without bias, scaled dot-product attention
    over the patch tokens with as many heads as the encoder, LayerNorm, Linear.
    About 1.2 M parameters for D = 768 and 10 classes.

    Parameters
    ----------
    n_queries : int, default=1
        Learned queries; their outputs are averaged.
    n_heads : int or "auto", default="auto"
        Attention heads; ``"auto"`` picks the largest of 12, 8, 6, 4, 2, 1
        dividing the embedding dimension. Must divide it.
    learning_rate : float or "auto", default="auto"
        AdamW learning rate. ``"auto"`` is ``1.6 / D`` (floored at
        ``D = 64``): about 2e-3 for 768-dimensional tokens, 2.5e-2 for
        64-dimensional ones. The key and value projections are ``D x D``,
        and with Adam the step size they need scales as ``1 / D``
        (measured from 64 to 1,024 dimensions in
        ``docs/benchmarks/defaults.md``). It assumes normalised tokens: with
        ``normalize_tokens="none"`` pass a float.
    weight_decay : float, default=1e-4
    {shared_parameters}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Token embedding dimension ``D``.
    n_heads_ : int
        Heads used.
    length_results_ : dict or None
        The choice of ``max_iter="auto"`` on a small set: ``max_iter`` (the
        candidate epochs), ``holdout_score`` (each one's macro average
        precision on the held-out clips) and ``n_holdout``; None when no
        choice was made (``max_iter`` set, ``early_stopping``, fewer than 200
        clips, or a set large enough for 30 epochs to give the minimum of
        steps).
    normalization_results_ : dict or None
        The held-out choice of ``normalize_tokens="auto"`` on sets of 200 to
        3,000 clips: ``normalize_tokens`` (the candidates, the offset rule's
        choice first), ``holdout_score`` (each one's macro average precision
        on the held-out clips after ``max_iter`` epochs), ``n_holdout``,
        ``max_iter`` and ``margin``; None when no choice ran.
    {shared_attributes}

    Notes
    -----
    ``max_iter="auto"`` chooses the training length on small sets because the
    best length depends on the tokens: on YAMNet's layer 11 (600 clips) the
    probe scores 0.213 after 30 epochs and 0.390 after 60, on CREPE's note
    scenes 0.745 and 0.716 (``docs/benchmarks/defaults.md``).
    ``max_iter=30`` is the paper's length.

    ``normalize_tokens="auto"`` checks the offset rule on the same held-out
    split: the two other modes of ``"scale"``, ``"center"`` and
    ``"standard"`` train for the longest candidate length, and one replaces
    the rule only if its held-out macro average precision beats the rule's
    best length by more than 0.02. The rule misjudges some sources: it
    centres Whisper tiny.en's tokens, on which centred tokens score 0.31 and
    raw ones 0.36 at the same learning rate. On 600 clips the choices cost
    about 2.7 fits: each candidate trains on 80 % of the clips.

    The LayerNorm before the linear layer removes each pooled vector's mean and
    scale, so with very small embedding dimensions the probe loses most of its
    input: for ``dim = 2`` only the sign of the difference of the two values
    survives. The estimator therefore declares the ``poor_score`` tag, which
    makes scikit-learn's ``check_estimator`` skip its accuracy threshold on
    2-feature toy problems; token maps of real encoders (D >= 64) are unaffected.

    Examples
    --------
    >>> import numpy as np
    >>> from skprobe import AttentiveProbeClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 8, 16)).astype("float32")
    >>> Y = (X[:, :, :3].max(axis=1) > 1.5).astype(int)  # 3 labels
    >>> clf = AttentiveProbeClassifier(max_iter=5, random_state=0).fit(X, Y)
    >>> clf.n_heads_, clf.predict(X[:2]).shape
    (8, (2, 3))
    """

    _parameter_constraints = {
        **BaseProbeClassifier._parameter_constraints,
        "normalize_tokens": [StrOptions({"auto", *NORMALIZATIONS})],
        "n_queries": [Interval(Integral, 1, None, closed="left")],
        "n_heads": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
    }

    def __init__(
        self,
        n_queries: int = 1,
        n_heads: int | str = "auto",
        *,
        prefix_tokens: int = 0,
        loss: str = "auto",
        asl_gamma_neg: float = 4.0,
        asl_gamma_pos: float = 1.0,
        asl_clip: float = 0.05,
        learning_rate: float | str = "auto",
        weight_decay: float = 1e-4,
        max_iter: int | str = "auto",
        batch_size: int | str = "auto",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        tol: float = 1e-4,
        normalize_tokens: str = "auto",
        device: str = "auto",
        random_state=None,
        verbose: int = 0,
    ) -> None:
        store_parameters(self, locals())

    _auto_min_steps = 480
    _auto_lr_times_fan_in = 1.6

    def _training_problem(self, network: ProbeNetwork, tokens: TokenSource, device: torch.device,
                          resident: torch.Tensor | None, problem: FitProblem,
                          ) -> tuple[nn.Module, TokenSource, torch.Tensor | None]:
        network.calibrate(tokens if resident is None else resident)
        self._set_fitted(length_results_=None, normalization_results_=None)
        lengths = self._candidate_lengths(len(tokens))
        rule = network.normalize  # the offset rule's choice, or the user's
        challengers = normalization_challengers(self.normalize_tokens, rule, len(tokens))
        if len(lengths) == 1 and not challengers:
            return network, tokens, resident
        candidates = [(rule, length) for length in lengths] + [(mode, lengths[-1]) for mode in challengers]
        if self.verbose:
            print(f"{type(self).__name__}: choosing among {candidates} (normalize_tokens, epochs) on a held-out split")

        best, scores, n_holdout = choose_on_holdout(
            network, tokens, resident, problem.targets, candidates, n_default=len(lengths),
            margin=NORMALIZATION_MARGIN, plan=replace(problem.plan, early_stopping=False, verbose=0),
            criterion=problem.criterion, batch_size=problem.batch_size, groups=problem.groups)
        max_iter = candidates[best][1]
        if len(lengths) > 1:
            self._set_fitted(length_results_={"max_iter": list(lengths), "holdout_score": scores[: len(lengths)],
                                              "n_holdout": n_holdout})
        if challengers:
            self._set_fitted(normalization_results_={
                "normalize_tokens": [rule, *challengers], "holdout_score": scores[len(lengths) - 1 :],
                "n_holdout": n_holdout, "max_iter": lengths[-1], "margin": NORMALIZATION_MARGIN})
        self._set_fitted(max_iter_=max_iter)
        return network, tokens, resident

    def _candidate_lengths(self, n_clips: int) -> list[int]:
        """``max_iter="auto"``: 30 epochs, and the minimum of steps where that needs more (small sets)."""
        shortest = _AUTO_EPOCHS[0]
        if (self.max_iter != "auto" or self.early_stopping or self.max_iter_ <= shortest
                or n_clips < LENGTH_SELECTION_MIN_CLIPS):
            return [self.max_iter_]
        return [shortest, self.max_iter_]

    def _build_head(self, dim: int, n_outputs: int) -> nn.Module:
        heads = auto_heads(dim) if self.n_heads == "auto" else self.n_heads
        if dim % heads:
            raise ValueError(f"n_heads={heads} must divide the token dimension {dim}; use n_heads='auto'")
        self._set_fitted(n_heads_=heads)
        n_params = attentive_parameter_count(dim, n_outputs, self.n_queries)
        if n_params > MAX_PARAMETERS:
            raise ValueError(
                f"the attentive probe on {dim}-dimensional tokens would have {n_params:,} parameters "
                f"(two {dim} x {dim} projections, {4 * n_params / 1e9:.1f} GB as float32), over the limit of "
                f"{MAX_PARAMETERS:,}; check that X is (n_clips, n_tokens, dim) with the encoder's embedding "
                "dimension last, reduce the dimension (e.g. PCA on the tokens), or use LinearProbeClassifier "
                "or PrototypicalProbeClassifier, whose size grows only linearly with dim"
            )
        return AttentivePoolingHead(dim, n_outputs, self.n_queries, heads)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True  # see Notes: LayerNorm on 2-feature toy data
        return tags

    def attention_weights(self, X) -> np.ndarray:
        """Attention of each query and head over the patch tokens.

        Returns
        -------
        ndarray of shape (n_clips, n_heads, n_queries, n_patches)
            Rows sum to 1 over the patch tokens.
        """
        return self._head_outputs(X, lambda head, patches: head.attend(patches, return_weights=True))
