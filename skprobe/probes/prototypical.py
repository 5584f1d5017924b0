"""Binarized prototypical probe ("protobin") of "Unmute the Patch Tokens"."""

from __future__ import annotations

from dataclasses import replace
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from ._holdout import (  # noqa: F401 (the probe's choice)
    HOLDOUT_FRACTION,
    NORMALIZATION_CANDIDATES,
    NORMALIZATION_SELECTION_CLIPS,
    choose_on_holdout,
    normalization_challengers,
)
from ._similarity import max_cosine_similarities
from ._tokens import TokenSource
from .base import (
    AUTO_CENTER_COHERENCE,
    NORMALIZATIONS,
    BaseProbeClassifier,
    FitProblem,
    ProbeNetwork,
    store_parameters,
    with_shared_parameters_doc,
)

__all__ = ["PrototypicalProbeClassifier", "PrototypeHead"]

#: Each candidate normalisation takes as many optimiser steps as the final fit, in batches of at most this many
#: clips: normalisations differ in how fast the probe learns more than in where it ends, so a race of fewer
#: steps favours the fastest (``docs/benchmarks/defaults.md``).
NORMALIZATION_SELECTION_BATCH = 8
#: The direction rule's choice stays unless another candidate's held-out macro average precision is higher by more
#: than this: held-out clips that share recordings with the training clips favour the faster learner (on aiSFX's
#: event scenes by up to 0.042 where the test split favours the rule; docs/benchmarks/defaults.md).
NORMALIZATION_MARGIN = 0.05


class PrototypeHead(nn.Module):
    """Class-agnostic prototypes, cosine similarity, max over patches, dense head.

    ``K = J * C`` float prototypes (init N(0, 0.02^2)) are binarised on every
    forward pass, ``sign(p)`` with ``sign(0) = +1`` and a straight-through
    (identity) gradient onto the float copy. Each patch token's cosine
    similarity to each binary prototype is max-pooled over all patch tokens,
    and ``Linear(K -> C)`` with bias gives the logits. ``binarize=False`` is the
    paper's ``protofloat`` ablation.

    Shapes: ``patches (B, M, D) -> similarities (B, M, K) -> scores (B, K) -> logits (B, C)``.
    """

    ignores_token_scale = True  # cosine similarity: ProbeNetwork.split may leave out a global token scale

    def __init__(self, dim: int, n_outputs: int, n_prototypes_per_class: int = 20, binarize: bool = True) -> None:
        super().__init__()
        self.binarize = binarize
        self.prototypes = nn.Parameter(torch.randn(n_prototypes_per_class * n_outputs, dim) * 0.02)
        self.linear = nn.Linear(n_prototypes_per_class * n_outputs, n_outputs)

    @staticmethod
    def centres_tokens(offset_ratio: float, coherence: float) -> bool:
        """``normalize_tokens="auto"``: centre when the tokens crowd around one direction.

        Cosine similarity sees directions only, so the rule looks at
        :func:`~skprobe.probes.base.direction_coherence` rather than the offset.
        """
        return coherence > AUTO_CENTER_COHERENCE

    def effective_prototypes(self) -> torch.Tensor:
        """The prototypes used in the forward pass (binary when ``binarize``), ``(K, D)``."""
        if not self.binarize:
            return self.prototypes
        signs = torch.where(self.prototypes >= 0, 1.0, -1.0).to(self.prototypes.dtype)
        return self.prototypes + (signs - self.prototypes).detach()  # straight-through estimator

    def similarities(self, patches: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every patch token with every prototype, ``(B, M, K)``."""
        return F.normalize(patches, dim=-1) @ F.normalize(self.effective_prototypes(), dim=-1).T

    def forward(self, prefix: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        return self.linear(max_cosine_similarities(patches, F.normalize(self.effective_prototypes(), dim=-1)))

    def frame_logits(self, prefix: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Per-frame logits ``(B, T, C)`` of patch tokens on their grid ``(B, T, F, D)``.

        BAT's frame-wise protobin: the similarity map is max-pooled over
        frequency only, per frame, and the same ``Linear(K -> C)`` maps each
        frame's ``K`` scores to logits. The clip's scores are the maximum of
        the frames' scores over time, so a frame holding the best match of
        every prototype gets exactly the clip's logits.
        """
        return self.linear(max_cosine_similarities(grid, F.normalize(self.effective_prototypes(), dim=-1)))


@with_shared_parameters_doc
class PrototypicalProbeClassifier(BaseProbeClassifier):
    """Binarized prototypical probe ("protobin", Rauch et al. 2025).

    Learns ``K = J * C`` class-agnostic prototypes, binarised with ``sign()``
    in every forward pass (straight-through gradient). Each clip is scored by
    the best-matching patch token per prototype (cosine similarity, max over
    patches); a dense ``Linear(K -> C)`` with bias maps the ``K`` scores to
    class logits. The ``[cls]`` / prefix tokens are not used. Prototypes are
    excluded from weight decay. For ``D = 768`` and 10 classes: 155,610
    parameters.

    Parameters
    ----------
    n_prototypes_per_class : int, default=20
        ``J``; the paper uses 20 (10 for the 527-class AudioSet).
    binarize : bool, default=True
        False trains float prototypes (the paper's ``protofloat`` ablation).
    learning_rate : float, default=2e-2
        AdamW learning rate; prototype probes need a high one (paper: 2e-3 to 8e-2).
    weight_decay : float, default=1e-4
        Applies to the linear head only.
    {shared_parameters}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Token embedding dimension ``D``.
    n_prototypes_ : int
        ``K = J * n_classes``.
    {shared_attributes}
    normalization_results_ : dict or None
        The held-out choice of ``normalize_tokens="auto"``:
        ``normalize_tokens`` (the candidates, the direction rule's choice
        first), ``holdout_score`` (macro average precision of the held-out
        clips), ``n_holdout``, ``max_iter`` and ``batch_size`` (the epochs
        and batch each candidate trained with) and ``margin``; None when no
        choice ran.

    Notes
    -----
    ``normalize_tokens="auto"`` (the default) lets the data decide on sets
    of 200 to 3,000 clips: a copy of the untrained probe per candidate
    (``"scale"``: raw directions, ``"center"``, ``"standard"``) trains on
    80 % of the clips (the attentive probe's length-choice split, in a
    forked random state) for as many optimiser steps as the final fit, in
    batches of 8 clips; the direction rule's choice is used for the final
    fit on all clips unless another candidate's macro average precision on
    the other 20 % is higher by more than 0.05 (``normalization_results_``).
    Normalisations differ more in how fast the probe learns than in where
    it ends, so a shorter race would choose the fastest learner; the margin
    guards against held-out clips that share recordings with the training
    clips. The choice costs about ``3 x 8 / batch_size`` of a fit's clip
    passes (0.3 for 600 clips, 0.6 for 300). On smaller and larger sets the
    rule decides alone: centre when the tokens crowd around one direction
    (a token's mean cosine similarity to their mean direction above 0.67),
    else only rescale. ``max_iter="auto"``
    gives small sets at least 720 optimiser steps (90 epochs for 600 clips: 0.552 on layer 11 against
    0.455 after 30). See ``docs/benchmarks/defaults.md``.
    ``set_params(normalize_tokens="none", batch_size=128, max_iter=30)`` is
    the paper's recipe.

    Examples
    --------
    >>> import numpy as np
    >>> from skprobe import PrototypicalProbeClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 8, 16)).astype("float32")
    >>> Y = (X[:, :, :3].max(axis=1) > 1.5).astype(int)
    >>> clf = PrototypicalProbeClassifier(n_prototypes_per_class=4, max_iter=5, random_state=0).fit(X, Y)
    >>> clf.n_prototypes_, clf.predict_proba(X[:2]).shape
    (12, (2, 3))
    """

    _parameter_constraints = {
        **BaseProbeClassifier._parameter_constraints,
        "n_prototypes_per_class": [Interval(Integral, 1, None, closed="left")],
        "binarize": ["boolean"],
        "normalize_tokens": [StrOptions({"auto", *NORMALIZATIONS})],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],  # scale-free head: no "auto" rule
    }
    _auto_min_steps = 720
    _no_decay = ("prototypes",)

    def __init__(
        self,
        n_prototypes_per_class: int = 20,
        binarize: bool = True,
        *,
        prefix_tokens: int = 0,
        loss: str = "auto",
        asl_gamma_neg: float = 4.0,
        asl_gamma_pos: float = 1.0,
        asl_clip: float = 0.05,
        learning_rate: float = 2e-2,
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

    def _training_problem(self, network: ProbeNetwork, tokens: TokenSource, device: torch.device,
                          resident: torch.Tensor | None, problem: FitProblem,
                          ) -> tuple[nn.Module, TokenSource, torch.Tensor | None]:
        network.calibrate(tokens if resident is None else resident)
        self._set_fitted(normalization_results_=None)
        rule = network.normalize  # the direction rule's choice, first among equals
        challengers = normalization_challengers(self.normalize_tokens, rule, len(tokens))
        if not challengers:
            return network, tokens, resident
        modes = [rule, *challengers]
        batch, length = self._selection_schedule(len(tokens), problem.batch_size)
        if self.verbose:
            print(f"{type(self).__name__}: choosing normalize_tokens among {modes} on a held-out split "
                  f"({length} epochs of batches of {batch} each)")

        index, scores, n_holdout = choose_on_holdout(
            network, tokens, resident, problem.targets, [(mode, length) for mode in modes], n_default=1,
            margin=NORMALIZATION_MARGIN, plan=replace(problem.plan, batch_size=batch, early_stopping=False, verbose=0),
            criterion=problem.criterion, batch_size=problem.batch_size, groups=problem.groups)
        self._set_fitted(normalization_results_={
            "normalize_tokens": modes, "holdout_score": scores, "n_holdout": n_holdout, "max_iter": length,
            "batch_size": batch, "margin": NORMALIZATION_MARGIN})
        return network, tokens, resident

    def _selection_schedule(self, n_clips: int, batch_size: int) -> tuple[int, int]:
        """Batch size and epochs of each candidate of the normalisation choice: the final fit's optimiser steps
        on the held-in clips, in batches of at most :data:`NORMALIZATION_SELECTION_BATCH` clips."""
        from ._training import held_out_size

        steps = self.max_iter_ * -(-n_clips // batch_size)
        kept = n_clips - held_out_size(n_clips, HOLDOUT_FRACTION)
        batch = min(batch_size, NORMALIZATION_SELECTION_BATCH)
        return batch, max(1, -(-steps // -(-kept // batch)))

    def _build_head(self, dim: int, n_outputs: int) -> nn.Module:
        self._set_fitted(n_prototypes_=self.n_prototypes_per_class * n_outputs)
        return PrototypeHead(dim, n_outputs, self.n_prototypes_per_class, self.binarize)

    def prototype_similarities(self, X) -> np.ndarray:
        """Cosine similarity of every patch token with every prototype.

        Returns
        -------
        ndarray of shape (n_clips, n_patches, n_prototypes)
        """
        return self._head_outputs(X, lambda head, patches: head.similarities(patches))

    def class_activation_maps(self, X) -> np.ndarray:
        """Per-token class evidence: prototype similarities weighted by the head.

        ``A[n, m, c] = sum_k W[c, k] * s[n, m, k]`` is the logit class ``c``
        would get (minus the bias) if patch token ``m`` were the best match of
        every prototype; reshape the token axis with the encoder's
        ``TokenLayout.to_grid`` to draw it over time x frequency.

        Returns
        -------
        ndarray of shape (n_clips, n_patches, n_classes)
        """
        return self._head_outputs(X, lambda head, patches: head.similarities(patches) @ head.linear.weight.T)
