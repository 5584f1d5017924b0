"""Linear probe on one pooled token per clip (the paper's ``linear`` baseline)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from ._logistic import C_GRID, DEFAULT_C, fit_logistic, select_c
from ._selection import Candidate, _folds, select_settings
from ._tokens import CHUNK_BYTES, TokenSource
from ._training import TrainResult
from .base import (
    NORMALIZATIONS,
    BaseProbeClassifier,
    FitProblem,
    ProbeNetwork,
    feature_moments,
    store_parameters,
    with_shared_parameters_doc,
)

__all__ = ["LinearProbeClassifier", "PooledLinearHead", "POOLED_FEATURES_MAX_BYTES"]

POOLINGS = ("cls", "mean", "max", "meanmax")

#: The linear probe pools every clip once and trains on the pooled features when they fit in this many bytes
#: (float32); larger sets stream the tokens and pool each batch, so host memory stays bounded.
POOLED_FEATURES_MAX_BYTES = 256 * 2**20

#: ``cv``: learning rates tried beside the ``"auto"`` rule (as factors of it) and normalisations tried for
#: ``normalize_tokens="auto"``. The length is not searched: longer AdamW training is weaker regularisation, which
#: shuffled folds of clips that share recordings overrate (90 epochs won the folds and lost on the test clips of
#: every event-scene source of the panel); the regularisation strength is the logistic regression's ``C``, chosen
#: by validation log-loss, which such folds mislead far less (``docs/benchmarks/defaults.md``).
_CV_RATE_FACTORS = (0.3, 3.0)
_CV_NORMALIZATIONS = ("center", "standard")
#: ``cv`` selects on a random subset of this many clips of larger sets (its cost grows with the clips).
_CV_MAX_CLIPS = 2048
#: L-BFGS iterations at most of ``solver="lbfgs"``.
LBFGS_MAX_ITER = 500
#: Training settings of the AdamW solver: setting one of them leaves ``solver="auto"`` with AdamW alone.
_ADAMW_SETTINGS = ("learning_rate", "max_iter", "batch_size")


class PooledLinearHead(nn.Module):
    """Pool tokens to one vector, then ``Linear``: ``(B, P, D), (B, M, D) -> (B, C)``.

    ``pooling``: ``"cls"`` takes the first prefix token, ``"mean"`` / ``"max"``
    pool the patch tokens, ``"meanmax"`` concatenates both (``2 D`` inputs).
    """

    normalizes_features = True  # ProbeNetwork.calibrate hands the normalisation to this head

    def __init__(self, dim: int, n_outputs: int, pooling: str = "mean") -> None:
        super().__init__()
        self.pooling = pooling
        self.linear = nn.Linear(2 * dim if pooling == "meanmax" else dim, n_outputs)
        self.register_buffer("feature_mean", None)
        self.register_buffer("feature_scale", None)

    def calibrate(self, batches, mode: str) -> None:
        """Normalisation statistics of the pooled features over ``(prefix, patches)`` training batches.

        The pooled vector is what the linear layer sees, so its own statistics
        are used: mean and max pooling have different spreads, and the mean of
        many tokens is far narrower than one token.
        """
        self.feature_mean, self.feature_scale = feature_moments((self.pool(*b) for b in batches), mode)

    def pool(self, prefix: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return prefix[:, 0]
        if self.pooling == "mean":
            return patches.mean(dim=1)
        if self.pooling == "max":
            return patches.amax(dim=1)
        return torch.cat([patches.mean(dim=1), patches.amax(dim=1)], dim=1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of pooled features ``(B, F)``: normalise, then ``Linear``."""
        if self.feature_mean is not None:
            features = (features - self.feature_mean) / self.feature_scale
        return self.linear(features)

    def forward(self, prefix: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        return self.classify(self.pool(prefix, patches))

    def frame_logits(self, prefix: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Per-frame logits ``(B, T, C)`` of patch tokens on their grid ``(B, T, F, D)``.

        Each frame's tokens are pooled over frequency as the clip's were over
        all patches, then normalised and classified by the same layer. With
        ``"mean"`` pooling the clip's logits are the mean of its frames' logits.
        """
        if self.pooling == "cls":
            raise ValueError("pooling='cls' classifies the [cls] token, which has no time axis: frame scores need "
                             "a probe that pools the patch tokens (pooling='mean', 'max' or 'meanmax')")
        b, t, f, d = grid.shape
        frames = grid.reshape(b * t, f, d)
        return self.classify(self.pool(frames[:, :0], frames)).reshape(b, t, -1)


class _PooledFeatureNetwork(nn.Module):
    """The trainable part of a :class:`PooledLinearHead` on precomputed pooled features ``(B, 1, F)``.

    It holds the head itself, so training it trains the head in place.
    """

    def __init__(self, head: PooledLinearHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head.classify(features[:, 0].float())


def pooled_features(network: ProbeNetwork, tokens: TokenSource | torch.Tensor,
                    device: torch.device | str = "cpu") -> np.ndarray:
    """The pooled feature vector of every clip, ``(n_clips, F)`` float32, in one chunked pass on ``device``.

    ``tokens`` is a :class:`TokenSource` or a tensor (tokens already on ``device``).
    """
    head = network.head
    if isinstance(tokens, TokenSource):
        chunks = tokens.tensor_chunks()
    else:
        step = max(1, CHUNK_BYTES // max(1, tokens[0].numel() * tokens.element_size()))
        chunks = (tokens[i : i + step] for i in range(0, len(tokens), step))
    out = None
    start = 0
    with torch.inference_mode():
        for chunk in chunks:
            features = head.pool(*network.split(chunk.to(device))).cpu()
            if out is None:
                out = np.empty((len(tokens), features.shape[1]), dtype=np.float32)
            out[start : start + len(features)] = features.numpy()
            start += len(features)
    return out


@with_shared_parameters_doc
class LinearProbeClassifier(BaseProbeClassifier):
    """Linear classifier on a pooled token of frozen-encoder token maps.

    The paper's ``linear`` baseline: a ``Linear(D -> C)`` on the ``[cls]``
    token, or on the mean of the patch tokens for encoders without one.
    Pooling has no parameters, so the probe pools every clip once and its
    training problem is a (multi-label) logistic regression on the pooled
    features: by default it is solved as scikit-learn's
    ``LogisticRegressionCV`` would (``solver``, ``C``, ``cv``), with the
    asymmetric loss trained by AdamW competing on multi-label ``y``.

    Parameters
    ----------
    pooling : {"cls", "mean", "max", "meanmax"}, default="mean"
        ``"cls"`` uses the first token and needs ``prefix_tokens >= 1``;
        the others pool the patch tokens.
    learning_rate : float or "auto", default="auto"
        AdamW learning rate. ``"auto"`` is ``10 / fan_in`` (``fan_in`` the
        pooled feature size: ``D``, or ``2 D`` for ``"meanmax"``; floored
        at 64), about 1e-2 for 1,024-dimensional tokens; the step size a
        linear layer on normalised features needs scales as ``1 / fan_in``
        with Adam (measured from 64 to 1,024 dimensions in
        ``docs/benchmarks/defaults.md``). It assumes normalised features:
        with ``normalize_tokens="none"`` pass a float. With ``cv``, 0.3 and
        3 times this rate are tried too. Setting it selects the AdamW solver
        (``solver="auto"``).
    weight_decay : float, default=1e-4
    {shared_parameters}
    cv : int, cross-validation splitter, iterable of splits or None, default=3
        Folds of an internal cross-validation that chooses the settings left
        at ``"auto"``, as ``LogisticRegressionCV`` does: the penalty ``C`` of
        the logistic regression (see ``solver``) and, for the AdamW
        solver, the learning rate (the rule, 0.3 and 3 times it) and the
        feature normalisation (``"center"`` or ``"standard"``). An int gives
        shuffled folds (stratified for single-label ``y``; grouped, with
        ``GroupKFold``, when ``fit`` gets ``groups``); any scikit-learn
        splitter (``GroupKFold``, ``StratifiedGroupKFold``,
        ``PredefinedSplit``, ...) or iterable of ``(train, validation)``
        index arrays is used as given, with ``split(X, y, groups)``. Pass
        ``groups`` when clips share a source (cut from the same recordings,
        sharing background beds, speakers or sites): shuffled folds then put
        near-copies on both sides of a split, the fold scores overrate weak
        regularisation, and the selection picks it (see
        ``docs/model-selection.md``). AdamW candidates are scored by macro
        average precision on the held-out fold, ``C`` by validation
        log-loss; the probe is refitted on all clips with the winner. Sets
        of more than 2,048 clips select on a random subset of 2,048 (not
        with an iterable of splits), which bounds the cost. ``None`` uses
        the rules alone (AdamW with the rule's rate, ``"center"``, 30
        epochs; for single-label ``y`` the logistic regression with
        ``C=1``). No selection runs when nothing is left at ``"auto"``, on
        sets of fewer than twice the folds, or when the pooled features
        exceed the memory bound of pooling once (the tokens then stream).
        Measured on the panel of ``docs/benchmarks/defaults.md``.
    solver : {"auto", "lbfgs", "adamw"}, default="auto"
        ``"lbfgs"`` solves the pooled-feature problem as scikit-learn's
        ``LogisticRegression`` does (L2 penalty ``1 / C``, L-BFGS to
        convergence, standardised features for ``normalize_tokens="auto"``;
        one-vs-rest for sigmoid losses, multinomial for ``"ce"``), on the
        CPU, whatever ``device``. ``"adamw"`` trains the linear layer with
        AdamW in torch (on ``device``), the only solver for the asymmetric
        loss. ``"auto"``: when ``learning_rate``, ``max_iter`` and
        ``batch_size`` are left at ``"auto"`` and ``early_stopping`` is
        off, the logistic regression replaces AdamW where both would train
        the same loss (BCE, or CE for single-label ``y``) and competes with
        the AdamW candidates of ``cv`` where ``loss="auto"`` is the
        asymmetric loss (multi-label ``y``; the better mean validation
        average precision wins). Setting one of those AdamW parameters, or
        ``loss="asl"``, keeps AdamW alone.
    C : float or "auto", default="auto"
        Inverse L2 penalty of the logistic regression, as in
        ``LogisticRegression``. ``"auto"`` chooses among 1e-4 to 1e2 in
        half-decades by the lowest mean validation log-loss over ``cv``,
        walking from the strongest penalty with warm starts and stopping
        three points past the best (1.0 without ``cv``). Not used by AdamW
        (see ``weight_decay``).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (``arange(n_labels)`` for multi-label ``y``).
    n_features_in_ : int
        Token embedding dimension ``D`` seen in ``fit``.
    {shared_attributes}
    solver_ : str
        ``"lbfgs"`` or ``"adamw"``: the solver of the final fit. With
        ``"lbfgs"``, ``loss_`` is ``"bce"`` or ``"ce"``, ``max_iter_`` the
        L-BFGS iteration limit, ``n_iter_`` and ``n_steps_`` the L-BFGS
        iterations taken (the most over the classes), ``loss_curve_`` the
        final training loss, and ``learning_rate_`` and ``batch_size_`` are
        not used.
    C_ : float or None
        The penalty of the logistic regression (None with AdamW).
    cv_results_ : dict or None
        The selection of ``cv``, one entry per candidate: ``solver``,
        ``learning_rate``, ``normalize_tokens``, ``max_iter`` (AdamW
        candidates; None for the logistic regression's learning rate),
        ``C`` and ``mean_log_loss`` (logistic-regression candidates; None
        for AdamW), ``mean_score`` and ``std_score`` (validation macro
        average precision over the folds) and ``rank`` (by
        ``mean_score``); None when no selection ran.

    See Also
    --------
    AttentiveProbeClassifier : attention pooling over the patch tokens.
    PrototypicalProbeClassifier : the binarized prototypical probe.

    Examples
    --------
    >>> import numpy as np
    >>> from skprobe import LinearProbeClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 8, 16)).astype("float32")  # 60 clips, 8 tokens, dim 16
    >>> y = (X[:, :, 0].mean(axis=1) > 0).astype(int)
    >>> clf = LinearProbeClassifier(max_iter=50, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    >>> from sklearn.model_selection import GroupKFold
    >>> recordings = np.arange(60) // 6  # six clips cut from each of ten recordings
    >>> clf = LinearProbeClassifier(cv=GroupKFold(3), random_state=0).fit(X, y, groups=recordings)
    >>> clf.solver_, clf.C_ in clf.cv_results_["C"]
    ('lbfgs', True)
    """

    _parameter_constraints = {
        **BaseProbeClassifier._parameter_constraints,
        "pooling": [StrOptions(set(POOLINGS))],
        "normalize_tokens": [StrOptions({"auto", *NORMALIZATIONS})],
        "cv": ["cv_object", None],
        "solver": [StrOptions({"auto", "adamw", "lbfgs"})],
        "C": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
    }

    def __init__(
        self,
        pooling: str = "mean",
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
        cv=3,
        solver: str = "auto",
        C: float | str = "auto",
        device: str = "auto",
        random_state=None,
        verbose: int = 0,
    ) -> None:
        store_parameters(self, locals())

    def _resolve_loss(self, kind: str) -> str:
        if self.solver == "lbfgs":
            if self.loss == "asl":
                raise ValueError("solver='lbfgs' solves the logistic regression (loss 'bce' or 'ce'), not the "
                                 "asymmetric loss; use solver='adamw' with loss='asl', or loss='auto'")
            if self.loss == "auto":
                return "bce" if kind == "multilabel" else "ce"
        return super()._resolve_loss(kind)

    def _check_params(self) -> None:
        if self.pooling == "cls" and self.prefix_tokens < 1:
            raise ValueError(
                "pooling='cls' needs prefix_tokens >= 1 (the [cls] token is the first token of X); "
                "got prefix_tokens=0 — set prefix_tokens or use pooling='mean'"
            )
        if self.solver == "lbfgs" and self.early_stopping:
            raise ValueError("early_stopping=True stops the epochs of solver='adamw'; solver='lbfgs' solves to "
                             "convergence: set early_stopping=False or solver='adamw'")

    _auto_lr_times_fan_in = 10.0

    def _fan_in(self, dim: int) -> int:
        return 2 * dim if self.pooling == "meanmax" else dim

    def _needs_patches(self) -> bool:
        return self.pooling != "cls"

    def _build_head(self, dim: int, n_outputs: int) -> nn.Module:
        return PooledLinearHead(dim, n_outputs, self.pooling)

    def _training_problem(self, network: ProbeNetwork, tokens: TokenSource, device: torch.device,
                          resident: torch.Tensor | None, problem: FitProblem,
                          ) -> tuple[nn.Module, TokenSource, torch.Tensor | None]:
        # Pooling has no trainable parameters: pool every clip once instead of once per epoch, and take the
        # normalisation statistics from the same pass.
        self._set_fitted(cv_results_=None, C_=None, solver_="adamw")
        if len(tokens) * self._fan_in(tokens.shape[2]) * 4 > POOLED_FEATURES_MAX_BYTES:
            if self.solver == "lbfgs":
                raise ValueError(
                    f"solver='lbfgs' needs the pooled features in memory, but {len(tokens):,} clips of "
                    f"{self._fan_in(tokens.shape[2])} features exceed {POOLED_FEATURES_MAX_BYTES:,} bytes; use "
                    "solver='adamw' (or 'auto'), which streams the tokens")
            if network.normalize == "auto":
                network.normalize = "center"  # no selection on streamed tokens
            return super()._training_problem(network, tokens, device, resident, problem)
        features = pooled_features(network, tokens if resident is None else resident, device)
        penalties = self._penalties()
        # L-BFGS solves exactly the loss AdamW would (BCE, CE) to convergence: it replaces the AdamW candidates;
        # with the asymmetric loss, which it cannot solve, the logistic regression competes with them
        alone = self.solver == "lbfgs" or (penalties and self.loss_ in ("bce", "ce"))
        candidates = [] if alone else self._candidates()
        n_splits = self._n_splits(len(features), problem.targets, problem.groups)
        best, best_c = (candidates[0] if candidates else None), (penalties[0] if penalties else None)
        if len(candidates) + len(penalties) > 1 and n_splits is not None and len(features) >= 2 * n_splits:
            best, best_c = self._select(features, problem, candidates, penalties, device)
        if best_c is not None and best is None:
            return self._solve_logistic(network, features, problem, best_c)
        self._set_fitted(learning_rate_=best.learning_rate, max_iter_=best.max_iter)
        network.normalize = best.normalize
        if network.normalize != "none":
            blocks = (torch.from_numpy(features[i : i + 4096]) for i in range(0, len(features), 4096))
            network.head.feature_mean, network.head.feature_scale = feature_moments(blocks, network.normalize)
        return _PooledFeatureNetwork(network.head), TokenSource(features), None

    def _n_splits(self, n_clips: int, targets: torch.Tensor, groups: np.ndarray | None) -> int | None:
        """Folds of ``cv`` (None: no selection)."""
        if self.cv is None:
            return None
        if isinstance(self.cv, Integral):
            return int(self.cv)
        from sklearn.model_selection import check_cv

        return check_cv(self.cv).get_n_splits(np.zeros((n_clips, 1)), targets.numpy(), groups)

    def _logistic_competes(self) -> bool:
        """``solver="auto"``: logistic regression joins the selection when the AdamW settings are left alone."""
        if self.solver == "lbfgs":
            return True
        return (self.solver == "auto" and self.loss != "asl" and not self.early_stopping
                and all(getattr(self, name) == "auto" for name in _ADAMW_SETTINGS))

    def _penalties(self) -> list[float]:
        """``C`` values the logistic regression may use (empty: AdamW alone)."""
        if not self._logistic_competes():
            return []
        if self.C != "auto":
            return [float(self.C)]
        return list(C_GRID) if self.cv is not None else [DEFAULT_C]

    def _logistic_normalization(self) -> str:
        return "standard" if self.normalize_tokens == "auto" else self.normalize_tokens

    def _select(self, features: np.ndarray, problem: FitProblem, candidates: list[Candidate],
                penalties: list[float], device: torch.device):
        """The best AdamW candidate or ``C`` on the folds of ``cv`` (one of the two is None), and ``cv_results_``."""
        kind = "multilabel" if problem.targets.ndim == 2 else "single-label"
        targets, groups = problem.targets, problem.groups
        explicit = not isinstance(self.cv, Integral) and not hasattr(self.cv, "split")  # an iterable of splits
        if len(features) > _CV_MAX_CLIPS and not explicit:
            subset = np.sort(np.random.default_rng(problem.seed).choice(len(features), _CV_MAX_CLIPS, replace=False))
            features, targets = features[subset], targets[torch.from_numpy(subset)]
            groups = None if groups is None else groups[subset]
        folds = _folds(targets.numpy(), kind, self.cv, problem.seed, groups)
        results = {"solver": [], "learning_rate": [], "normalize_tokens": [], "max_iter": [], "C": [],
                   "mean_log_loss": [], "mean_score": [], "std_score": []}
        best, best_score = None, -np.inf
        if candidates:
            best, torch_results = select_settings(
                features, targets, kind, problem.criterion, candidates, n_outputs=problem.n_outputs,
                batch_size=problem.batch_size, weight_decay=self.weight_decay, cv=self.cv, seed=problem.seed,
                device=device, folds=folds)
            for key in ("learning_rate", "normalize_tokens", "max_iter", "mean_score", "std_score"):
                results[key] += torch_results[key]
            results["solver"] += ["adamw"] * len(candidates)
            results["C"] += [None] * len(candidates)
            results["mean_log_loss"] += [None] * len(candidates)
            best_score = max((m for m in torch_results["mean_score"] if np.isfinite(m)), default=-np.inf)
        best_c = None
        if penalties:
            mode = self._logistic_normalization()
            normalize = None if mode == "none" else (
                lambda rows: tuple(t.numpy() for t in feature_moments([torch.from_numpy(rows)], mode)))
            c, logistic = select_c(features, targets.numpy(), folds, multilabel=kind == "multilabel",
                                   n_outputs=problem.n_outputs, normalize=normalize, max_iter=LBFGS_MAX_ITER,
                                   grid=tuple(penalties))
            n = len(logistic["C"])
            results["solver"] += ["lbfgs"] * n
            results["learning_rate"] += [None] * n
            results["normalize_tokens"] += [mode] * n
            results["max_iter"] += [LBFGS_MAX_ITER] * n
            results["C"] += logistic["C"]
            results["mean_log_loss"] += logistic["mean_log_loss"]
            results["mean_score"] += logistic["mean_score"]
            results["std_score"] += logistic["std_score"]
            score = logistic["mean_score"][logistic["C"].index(c)]  # average precision at the chosen C
            if best is None or score > best_score:  # ties keep AdamW
                best, best_c = None, c
        ranked = np.where(np.isfinite(results["mean_score"]), results["mean_score"], -np.inf)
        rank = np.empty(len(ranked), dtype=int)
        rank[np.argsort(-ranked, kind="stable")] = np.arange(1, len(ranked) + 1)
        results["rank"] = rank.tolist()
        self._set_fitted(cv_results_=results)
        return best, best_c

    def _solve_logistic(self, network: ProbeNetwork, features: np.ndarray, problem: FitProblem, C: float):
        """Fit the head as a logistic regression with penalty ``C`` on all clips; the fit is then done."""
        mode = self._logistic_normalization()
        network.normalize = mode
        head = network.head
        X = features
        if mode != "none":
            head.feature_mean, head.feature_scale = feature_moments([torch.from_numpy(features)], mode)
            X = (features - head.feature_mean.numpy()) / head.feature_scale.numpy()
        multilabel = problem.targets.ndim == 2
        solution = fit_logistic(X, problem.targets.numpy(), multilabel=multilabel, n_outputs=problem.n_outputs,
                                C=C, max_iter=LBFGS_MAX_ITER)
        with torch.no_grad():
            head.linear.weight.copy_(torch.from_numpy(solution.coef))
            head.linear.bias.copy_(torch.from_numpy(solution.intercept))
            logits = head.linear(torch.from_numpy(X).float())
            if multilabel:
                loss = nn.functional.binary_cross_entropy_with_logits(logits, problem.targets.float())
            else:
                loss = nn.functional.cross_entropy(logits, problem.targets)
        self._set_fitted(solver_="lbfgs", C_=C, loss_="bce" if multilabel else "ce", max_iter_=LBFGS_MAX_ITER)
        module = _PooledFeatureNetwork(head)
        problem.solved = TrainResult(module=module, n_iter=solution.n_iter, loss_curve=[float(loss)])
        return module, TokenSource(features), None

    def _fitted_attributes(self, module, result, plan, n_clips: int) -> dict:
        attributes = super()._fitted_attributes(module, result, plan, n_clips)
        if self.solver_ == "lbfgs":
            attributes["n_steps_"] = result.n_iter  # L-BFGS iterations, not optimiser steps over batches
        return attributes

    def _candidates(self) -> list[Candidate]:
        """Settings ``cv`` chooses among, the defaults' rules first: the parameters left at ``"auto"`` vary."""
        rates = [self.learning_rate_] + ([self.learning_rate_ * f for f in _CV_RATE_FACTORS]
                                         if self.learning_rate == "auto" else [])
        modes = list(_CV_NORMALIZATIONS) if self.normalize_tokens == "auto" else [self.normalize_tokens]
        return [Candidate(lr, mode, self.max_iter_) for mode in modes for lr in rates]
