"""Shared base of the probes: input and target validation, training, outputs.

A probe is a small head trained on frozen token maps ``X`` of shape
``(n_clips, n_tokens, dim)`` (or ``(n_clips, dim)``, one token per clip). The
first ``prefix_tokens`` tokens (``[cls]`` and the like) are kept apart from
the patch tokens that the heads pool over.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
import torch
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_feature_names, check_array, check_is_fitted, validate_data
from torch import nn

from .._torch import resolve_device
from ._batches import inference_batches
from ._frames import FrameScoresMixin
from ._targets import encode_targets
from ._tokens import TokenSource, check_chunks, is_token_array
from ._training import stage_tokens, train_module
from .losses import LOSSES, check_training, make_loss

__all__ = ["BaseProbeClassifier", "FitProblem", "NORMALIZATIONS", "ProbeNetwork", "SHARED_ATTRIBUTES_DOC", "SHARED_PARAMETERS_DOC",
           "TokenMoments", "auto_batch_size", "auto_learning_rate", "direction_coherence", "feature_moments", "offset_ratio",
           "store_parameters",
           "with_shared_parameters_doc"]

_TOKEN_DTYPES = [np.float32, np.float16, np.float64]

#: Input normalisations of the probes (``normalize_tokens``).
NORMALIZATIONS = ("center", "standard", "scale", "none")

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

SHARED_PARAMETERS_DOC = """prefix_tokens : int, default=0
        Number of leading non-patch tokens in ``X`` (``[cls]``, distillation or
        register tokens). They are excluded from patch pooling.
    loss : {"auto", "asl", "bce", "ce"}, default="auto"
        Training loss. ``"auto"`` is ``"asl"`` (asymmetric loss) for multi-label
        ``y`` and ``"ce"`` (softmax cross-entropy) for binary or multi-class
        ``y``. ``"asl"`` and ``"bce"`` on single-label ``y`` train one sigmoid per
        class; ``predict_proba`` then normalises the rows.
    asl_gamma_neg, asl_gamma_pos, asl_clip : float, default=4.0, 1.0, 0.05
        Asymmetric-loss focusing exponents and negative margin (Bird-MAE's
        values). ``(0, 0, 0)`` equals ``"bce"``.
    weight_decay : float
        AdamW weight decay (prototypes are excluded).
    max_iter : int or "auto", default="auto"
        Training epochs. ``"auto"`` is 30 epochs (the paper's), or more on
        small sets so that training takes at least a minimum number of
        optimiser steps: 0 for the linear probe (30 epochs, or 90 where its
        ``cv`` chooses them), 480 for the attentive and 720 for the
        prototypical probe (their attention
        and prototypes need more steps on long token maps than small sets
        give in 30 epochs: see ``docs/benchmarks/defaults.md``), and at most
        90 epochs. With the default batch size, 600 clips train for 60 / 90
        epochs, and sets of about 3,000 clips or more for 30. The attentive
        probe, on sets of 200 clips or more where the minimum needs more
        than 30 epochs, chooses between 30 epochs and the minimum by the
        macro average precision of 20 % of the clips held out
        (``length_results_``) and trains on all clips for the winner. The
        resolved value is ``max_iter_``.
    batch_size : int or "auto", default="auto"
        Clips per optimisation step. ``"auto"`` is ``n_clips / 8`` clipped to
        [32, 128], so that an epoch has at least 8 steps where the set
        allows it (small sets then get enough optimiser steps: 200 clips
        give 210 steps in 30 epochs instead of 60) and sets of 1,024 clips
        or more train with batches of 128. Also the inference batch size
        (128 for ``"auto"``).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training clips (stratified for
        single-label ``y``), stop after ``n_iter_no_change`` epochs without a
        relative improvement of ``tol`` in validation loss, and keep the best
        epoch's weights.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=5
    tol : float, default=1e-4
    normalize_tokens : {"auto", "center", "standard", "scale", "none"}
        Input normalisation with statistics of the training set, fixed
        before training and kept in the fitted network (the choice made is
        ``normalize_tokens_``). ``"center"`` subtracts the per-dimension mean
        and divides by one global scale (the root-mean-square deviation over
        all dimensions): it keeps the geometry of the tokens and makes the
        probe invariant to the encoder's token offset and scale, so one
        learning rate serves every token scale. ``"scale"`` only divides by
        the root mean square of the values. ``"standard"`` divides each
        dimension by its own standard deviation (``StandardScaler``).
        ``"none"`` feeds the raw tokens (the paper's recipe). ``"auto"``
        (the default) is, for the attentive probe, ``"center"`` when the
        tokens share a common offset (``|mean|^2`` over a quarter of their
        total variance), for the prototypical probe ``"center"`` when they
        crowd around one direction (mean cosine similarity to their mean
        above 0.67), and ``"scale"`` otherwise, the prototypical probe
        choosing among ``"scale"``, ``"center"`` and ``"standard"`` on
        held-out clips instead on sets of 200 to 3,000 clips
        (``normalization_results_``); for the linear probe, ``"standard"``
        for its logistic regression, and ``"center"`` or ``"standard"`` as
        its ``cv`` chooses for AdamW (``"center"`` without ``cv``). The attentive and
        prototypical probes normalise the patch tokens; the linear probe
        normalises its pooled feature vector. Chosen on the panel of
        ``benchmarks/bench_defaults_panel.py`` (see
        ``docs/benchmarks/defaults.md``).
    device : str, default="auto"
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``. Resolved at each ``fit``/``predict``, so a probe fitted
        on a GPU predicts on a CPU-only machine.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, shuffling and the validation split.
    verbose : int, default=0
        1 prints a line per epoch, 2 adds a progress bar."""


#: Fitted attributes every probe sets in ``fit`` (numpydoc lines, spliced into each probe's docstring).
SHARED_ATTRIBUTES_DOC = """module_ : torch.nn.Module
        The trained network (on CPU after ``fit``).
    loss_ : str
        The resolved training loss.
    learning_rate_ : float
        The learning rate used (``"auto"`` resolved).
    normalize_tokens_ : str
        The input normalisation used (``"auto"`` resolved).
    max_iter_ : int
        Epochs planned (``"auto"`` resolved; ``n_iter_`` is lower after early stopping).
    n_iter_ : int
        Epochs run.
    batch_size_ : int
        Training batch size used (``batch_size="auto"`` resolved).
    n_steps_ : int
        Optimiser steps taken.
    loss_curve_ : list of float
        Mean training loss per epoch.
    validation_loss_curve_ : list of float or None
        Validation loss per epoch when ``early_stopping``.
    best_validation_loss_ : float or None
    n_trainable_parameters_ : int"""


@dataclass
class FitProblem:
    """What ``fit`` trains on, handed to :meth:`BaseProbeClassifier._training_problem`.

    ``targets``: class indices ``(n,)`` for the softmax loss, else a 0/1
    indicator ``(n, n_outputs)``; ``criterion``: the training loss.
    """

    targets: torch.Tensor
    n_outputs: int
    criterion: nn.Module
    batch_size: int
    seed: int


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


class TokenMoments(NamedTuple):
    """Per-dimension statistics (float64) of rows ``(n, D)``; see :func:`raw_moments`."""

    mean: torch.Tensor
    var: torch.Tensor
    unit_mean: torch.Tensor | None = None
    """Mean of the rows scaled to unit length (``directions=True`` only)."""


def raw_moments(batches, directions: bool = False) -> TokenMoments:
    """Per-dimension mean and variance (float64) of rows ``(n, D)`` streamed in batches.

    One pass in the batches' precision (float32 unless float64), accumulated
    in float64 about the first batch's mean, so tokens far from zero lose no
    precision to cancellation. ``directions=True`` also averages the rows
    scaled to unit length, in the same pass (for :func:`direction_coherence`).
    """
    total = total_sq = shift = unit_total = None
    count = 0
    for block in batches:
        block = block.reshape(-1, block.shape[-1])
        if block.dtype != torch.float64:
            block = block.float()
        if shift is None:
            shift = block.mean(0)
            total = torch.zeros(block.shape[-1], dtype=torch.float64, device=block.device)
            total_sq = torch.zeros(block.shape[-1], dtype=torch.float64, device=block.device)
            unit_total = torch.zeros_like(total)
        if directions:
            unit_total += torch.nn.functional.normalize(block, dim=1).sum(0).double()
        centred = block - shift
        total += centred.sum(0).double()
        total_sq += centred.square_().sum(0).double()
        count += block.shape[0]
    mean = shift.double() + total / count
    var = ((total_sq - total.square() / count) / count).clamp(min=0)
    return TokenMoments(mean, var, unit_total / count if directions else None)


def normalisation_stats(mean: torch.Tensor, var: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift and scale (float32) for ``normalize_tokens=mode`` from :func:`raw_moments`.

    ``"standard"``: per-dimension mean and standard deviation (a dimension
    with no spread keeps scale 1). ``"center"``: per-dimension mean and one
    global scale, the root of the mean per-dimension variance. ``"scale"``:
    no shift, and one global scale, the root mean square of the values.
    """
    if mode == "standard":
        std = var.sqrt()
        scale = torch.where(std > 1e-6 * std.max().clamp(min=1e-12), std, torch.ones_like(std))
        return mean.float(), scale.float()
    if mode == "scale":
        return torch.zeros_like(mean).float(), _global_scale((var + mean.square()).mean().sqrt(), mean)
    return mean.float(), _global_scale(var.mean().sqrt(), mean)


def feature_moments(batches, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift and scale of rows ``(n, D)`` streamed in batches, for ``normalize_tokens=mode``.

    :func:`raw_moments` followed by :func:`normalisation_stats`.

    >>> import torch
    >>> x = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    >>> feature_moments([x], "standard")
    (tensor([ 1., 20.]), tensor([ 1., 10.]))
    """
    moments = raw_moments(batches)
    return normalisation_stats(moments.mean, moments.var, mode)


def _global_scale(rms: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.full_like(like, float(rms) if rms > 0 else 1.0).float()


class ProbeNetwork(nn.Module):
    """Wraps a head: casts tokens to float32, normalises, splits prefix from patches.

    ``head(prefix (B, P, D), patches (B, M, D)) -> logits (B, C)``. The
    normalisation statistics are set by :meth:`calibrate` on the training
    tokens. A head with ``normalizes_features = True`` (the linear probe)
    normalises its own pooled features instead of the tokens.

    Parameters
    ----------
    head : nn.Module
    prefix_tokens : int
    normalize : {"center", "standard", "scale", "none", "auto"}, default="none"
        ``"auto"`` becomes ``"center"`` or ``"scale"`` in :meth:`calibrate`,
        from the same pass: by the head's ``centres_tokens(offset_ratio,
        coherence)`` if it has one, else when :func:`offset_ratio` of the
        training tokens exceeds :data:`AUTO_CENTER_OFFSET_RATIO`.
    """

    def __init__(self, head: nn.Module, prefix_tokens: int, normalize: str = "none") -> None:
        super().__init__()
        self.head = head
        self.prefix_tokens = prefix_tokens
        self.normalize = normalize
        self.register_buffer("token_mean", None)
        self.register_buffer("token_scale", None)
        # set by calibrate() for normalize="auto"
        self.token_offset_ratio: float | None = None
        self.token_coherence: float | None = None

    @staticmethod
    def centres_tokens(offset: float, coherence: float) -> bool:
        """The ``"auto"`` rule of heads without their own ``centres_tokens``: a common offset."""
        return offset > AUTO_CENTER_OFFSET_RATIO

    def calibrate(self, tokens: torch.Tensor, chunk: int = 256) -> ProbeNetwork:
        """Set the normalisation statistics from the training tokens ``(n, T, D)``."""
        if self.normalize == "none":
            return self
        if getattr(self.head, "normalizes_features", False):
            batches = (self.split(tokens[i : i + chunk]) for i in range(0, len(tokens), chunk))
            self.head.calibrate(batches, self.normalize)
            return self
        has_patches = tokens.shape[1] > self.prefix_tokens
        patches = tokens[:, self.prefix_tokens :] if has_patches else tokens
        auto = self.normalize == "auto"
        moments = raw_moments((patches[i : i + chunk] for i in range(0, len(patches), chunk)), directions=auto)
        if auto:
            self.token_offset_ratio = offset_ratio(moments.mean, moments.var)
            self.token_coherence = direction_coherence(moments.mean, moments.unit_mean)
            centre = getattr(self.head, "centres_tokens", self.centres_tokens)
            self.normalize = "center" if centre(self.token_offset_ratio, self.token_coherence) else "scale"
        self.token_mean, self.token_scale = normalisation_stats(moments.mean, moments.var, self.normalize)
        return self

    def split(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32, normalised ``(prefix (B, P, D), patches (B, M, D))``."""
        tokens = tokens.float()
        if self.token_mean is not None:
            if self.normalize == "scale":  # no shift: one multiplication
                tokens = tokens * (1.0 / self.token_scale)
            else:  # the difference is a fresh tensor: divide in place
                tokens = torch.sub(tokens, self.token_mean).div_(self.token_scale)
        return tokens[:, : self.prefix_tokens], tokens[:, self.prefix_tokens :]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(*self.split(tokens))


class BaseProbeClassifier(FrameScoresMixin, ClassifierMixin, BaseEstimator):
    """Base class of the probes; not for direct use.

    Subclasses implement :meth:`_build_head` and set ``_no_decay`` (parameter
    name patterns excluded from weight decay).
    """

    _parameter_constraints: dict = {
        "prefix_tokens": [Interval(Integral, 0, None, closed="left")],
        "loss": [StrOptions({"auto", *LOSSES})],
        "asl_gamma_neg": [Interval(Real, 0, None, closed="left")],
        "asl_gamma_pos": [Interval(Real, 0, None, closed="left")],
        "asl_clip": [Interval(Real, 0, 1, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "normalize_tokens": [StrOptions(set(NORMALIZATIONS))],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }
    _no_decay: tuple[str, ...] = ()
    #: ``max_iter="auto"``: at least this many optimiser steps (and at least 30 epochs).
    _auto_min_steps: int = 0
    #: ``learning_rate="auto"`` is ``_auto_lr_times_fan_in / fan in`` (see :func:`auto_learning_rate`).
    _auto_lr_times_fan_in: float | None = None

    # -- to implement --------------------------------------------------------------
    def _build_head(self, dim: int, n_outputs: int) -> nn.Module:
        raise NotImplementedError

    def _check_params(self) -> None:
        """Checks that depend on several parameters (after ``_validate_params``)."""

    def _fan_in(self, dim: int) -> int:
        """Inputs of the head's widest trained map for embedding dimension ``dim``."""
        return dim

    def _resolve_learning_rate(self, dim: int) -> float:
        if self.learning_rate != "auto":
            return float(self.learning_rate)
        if self._auto_lr_times_fan_in is None:
            raise ValueError(f"{type(self).__name__} has no learning_rate='auto' rule; pass a float")
        return auto_learning_rate(self._auto_lr_times_fan_in, self._fan_in(dim))

    # -- input validation ------------------------------------------------------------
    def _validate_tokens(self, X, *, reset: bool, check_values: bool = True) -> TokenSource:
        """``X`` as a :class:`TokenSource` over finite float tokens ``(n, n_tokens, dim)``.

        Float ndarrays, memory maps and store-backed array-likes of 2 or 3
        dimensions are checked in chunks without a converted copy; anything
        else (lists, DataFrames, integer arrays) goes through scikit-learn's
        validation. Both set the same fitted attributes. With
        ``check_values=False`` the chunked check for NaN and infinity is left
        to the caller (``fit`` does it while staging the tokens).
        """
        X = self._prepare_tokens(X, reset=reset)
        ndim = getattr(X, "ndim", None) if not isinstance(X, (list, tuple)) else np.ndim(X)
        if ndim is not None and ndim > 3:
            raise ValueError(
                f"X must be (n_clips, n_tokens, dim) or (n_clips, dim) token arrays, got a {ndim}-D array of shape "
                f"{np.shape(X)}; for several encoder layers select one (e.g. X[:, -1]) or merge the layer axis"
            )
        if is_token_array(X):
            if ndim == 2:
                _check_feature_names(self, X, reset=reset)
            source = TokenSource(X)
            self._check_dim(source.shape[2], reset, ndim)
        elif ndim == 3:
            X = check_array(X, allow_nd=True, dtype=_TOKEN_DTYPES, input_name="X")
            if X.shape[1] < 1 or X.shape[2] < 1:
                raise ValueError(f"X needs at least one token of at least one dimension, got shape {X.shape}")
            self._check_dim(X.shape[2], reset, ndim)
            source = TokenSource(X)
        else:
            source = TokenSource(validate_data(self, X, reset=reset, dtype=_TOKEN_DTYPES))
        if check_values:
            check_chunks(source)  # after the cast to the compute dtype: float64 beyond float32 is caught too
        if source.shape[1] <= self.prefix_tokens and self._needs_patches():
            raise ValueError(
                f"X has {source.shape[1]} token(s) per clip but prefix_tokens={self.prefix_tokens}: no patch tokens "
                "are left to pool over; lower prefix_tokens or pass the patch tokens"
            )
        return source

    def _check_dim(self, dim: int, reset: bool, ndim: int) -> None:
        if reset:
            self.n_features_in_ = dim
            if ndim == 3:
                self.__dict__.pop("feature_names_in_", None)
        elif dim != self.n_features_in_:
            detail = " (the token embedding dimension seen in fit)" if ndim == 3 else ""
            raise ValueError(
                f"X has {dim} features, but {type(self).__name__} is expecting {self.n_features_in_} "
                f"features as input{detail}."
            )

    def _needs_patches(self) -> bool:
        return True

    def _prepare_tokens(self, X, *, reset: bool):
        """Hook of :meth:`_validate_tokens`: ``X`` in a layout it reads (3-D or 2-D); ``X`` itself by default.

        A probe that takes other layouts (the multi-layer probe's
        ``(n_clips, n_layers, n_tokens, dim)``) checks them here and returns
        a 3-D view of them, without copying float tokens.
        """
        return X

    def _build_network(self, dim: int, n_outputs: int) -> ProbeNetwork:
        """The network ``fit`` trains: :meth:`_build_head` in a :class:`ProbeNetwork`."""
        return ProbeNetwork(self._build_head(dim, n_outputs), self.prefix_tokens, self.normalize_tokens)

    # -- training --------------------------------------------------------------------
    def fit(self, X, y):
        """Train the probe on token maps.

        Parameters
        ----------
        X : array-like of shape (n_clips, n_tokens, dim) or (n_clips, dim)
            Frozen-encoder tokens (float16/32/64). The token count may differ
            between ``fit`` and ``predict``.
        y : array-like of shape (n_clips,) or (n_clips, n_classes)
            Class labels (any type) or a 0/1 multi-label indicator matrix.

        Returns
        -------
        self

        Notes
        -----
        A ``fit`` that does not finish (Ctrl-C, which raises
        ``KeyboardInterrupt`` out of ``fit``, or any error) leaves the probe
        not fitted, also when it was fitted before: every fitted attribute
        is removed, ``check_is_fitted`` raises ``NotFittedError``, and a
        later ``fit`` starts afresh.
        """
        try:
            return self._fit(X, y)
        except BaseException:
            self._forget_fit()
            raise

    #: Fitted state without a trailing underscore (removed with the fitted attributes by :meth:`_forget_fit`).
    _PRIVATE_FIT_STATE = ("_target_kind", "_sigmoid_outputs", "_y_dtype")

    def _forget_fit(self) -> None:
        """Remove every fitted attribute (``name_``) and the private fitted state: the probe is not fitted."""
        for name in list(vars(self)):
            if (name.endswith("_") and not name.startswith("__")) or name in self._PRIVATE_FIT_STATE:
                delattr(self, name)

    def _fit(self, X, y):
        self._validate_params()
        self._check_params()
        tokens = self._validate_tokens(X, reset=True, check_values=False)  # values: stage_tokens below
        targets = encode_targets(y, len(tokens))
        if len(targets.classes) < 2 and targets.kind != "multilabel":
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; y holds only one class "
                f"({targets.classes[0]!r})"
            )
        loss = self._resolve_loss(targets.kind)
        device = resolve_device(self.device)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

        self.classes_ = targets.classes
        self._target_kind = targets.kind
        self._sigmoid_outputs = loss != "ce"
        self._y_dtype = targets.dtype
        self.loss_ = loss

        if loss == "ce":
            target_tensor = torch.from_numpy(targets.indices)
        else:
            target_tensor = torch.from_numpy(targets.indicator)
        batch_size = self._train_batch_size(len(tokens))
        n_fit = len(tokens) - (max(1, round(self.validation_fraction * len(tokens))) if self.early_stopping else 0)
        self.max_iter_ = self._resolve_max_iter(n_fit, batch_size)
        self.learning_rate_ = self._resolve_learning_rate(tokens.shape[2])
        resident = stage_tokens(tokens, batch_size, device)  # checks values; on a GPU: tokens kept there if they fit
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            network = self._build_network(tokens.shape[2], len(self.classes_))
            criterion = make_loss(loss, gamma_neg=self.asl_gamma_neg, gamma_pos=self.asl_gamma_pos,
                                  clip=self.asl_clip)
            problem = FitProblem(targets=target_tensor, n_outputs=len(self.classes_), criterion=criterion,
                                 batch_size=batch_size, seed=seed)
            trainable, train_tokens, train_resident = self._training_problem(network, tokens, device, resident,
                                                                             problem)
            del resident  # what stays on the device is train_resident
            result = self._train(trainable, train_tokens, target_tensor, problem, device, max_iter=self.max_iter_,
                                 early_stopping=self.early_stopping, verbose=self.verbose, stratify=targets.indices,
                                 resident=train_resident)
            del train_resident
        if result.module is not trainable:
            raise RuntimeError("the training engine trained a copy of the probe's network")  # skorch trains in place
        self.normalize_tokens_ = network.normalize
        self.module_ = network.cpu().eval()  # fitted attributes live on the CPU, whatever the device
        check_training(self, self.module_, tokens, target_tensor, loss, result.loss_curve)
        self.n_iter_ = result.n_iter
        self.batch_size_ = batch_size
        self.n_steps_ = result.n_iter * -(-n_fit // batch_size)
        self.loss_curve_ = result.loss_curve
        self.validation_loss_curve_ = result.validation_loss_curve if self.early_stopping else None
        self.best_validation_loss_ = result.best_validation_loss
        self.n_trainable_parameters_ = sum(p.numel() for p in self.module_.parameters() if p.requires_grad)
        return self

    def _train(self, module: nn.Module, tokens: TokenSource, targets: torch.Tensor, problem: FitProblem,
               device: torch.device, *, max_iter: int, early_stopping: bool = False, verbose: int = 0,
               stratify: np.ndarray | None = None, resident: torch.Tensor | None = None):
        """:func:`train_module` with this probe's optimiser settings."""
        return train_module(
            module,
            tokens,
            targets,
            criterion=problem.criterion,
            learning_rate=self.learning_rate_,
            weight_decay=self.weight_decay,
            no_decay=tuple(f"head.{p}" for p in self._no_decay),
            max_iter=max_iter,
            batch_size=problem.batch_size,
            early_stopping=early_stopping,
            validation_fraction=self.validation_fraction,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
            device=device,
            verbose=verbose,
            seed=problem.seed,
            stratify=stratify,
            resident=resident,
        )

    def _training_problem(self, network: ProbeNetwork, tokens: TokenSource, device: torch.device,
                          resident: torch.Tensor | None, problem: FitProblem,
                          ) -> tuple[nn.Module, TokenSource, torch.Tensor | None]:
        """Calibrate ``network`` and return what to train (on ``device``) and on which inputs.

        ``resident`` is ``tokens`` already on ``device`` (or None); ``problem``
        holds the targets and training settings (for heads that choose
        settings of their own). Returns the module to train, its inputs as a
        :class:`TokenSource` and those inputs on ``device`` when they are there
        (or None). By default the network itself on the tokens. A head whose
        first stage has no trainable parameters may return a module sharing
        the trainable parameters of ``network`` and precomputed inputs instead
        (the linear probe trains on pooled features); ``network`` must end up
        trained. It may also update ``learning_rate_``, ``max_iter_`` and
        ``network.normalize`` before returning.
        """
        network.calibrate(tokens if resident is None else resident)
        return network, tokens, resident

    def _resolve_max_iter(self, n_fit: int, batch_size: int) -> int:
        if self.max_iter != "auto":
            return int(self.max_iter)
        steps_per_epoch = -(-n_fit // batch_size)
        low, high = _AUTO_EPOCHS
        return min(high, max(low, -(-self._auto_min_steps // steps_per_epoch)))

    def _train_batch_size(self, n_clips: int) -> int:
        return auto_batch_size(n_clips) if self.batch_size == "auto" else self.batch_size

    def _resolve_loss(self, kind: str) -> str:
        if self.loss == "auto":
            return "asl" if kind == "multilabel" else "ce"
        if self.loss == "ce" and kind == "multilabel":
            raise ValueError(
                "loss='ce' (softmax cross-entropy) needs single-label y, but y is a multi-label indicator "
                "matrix; use loss='asl' or 'bce'"
            )
        return self.loss


    # -- inference -------------------------------------------------------------------
    def _batched(self, X, fn) -> np.ndarray:
        """``fn(network, token batch)`` over ``X`` in batches, as float64 numpy.

        Every batch has exactly the inference batch size (the last one padded
        with zero clips) and runs in float32 without TF32 or autocast, so the
        output of a clip does not depend on which clips share its batch or on
        their order (bitwise on the CPUs tested). Changing ``batch_size``
        changes the problem shape and may change outputs by float32 rounding
        (relative differences of order 1e-6).
        """
        check_is_fitted(self)
        source = self._validate_tokens(X, reset=False)
        device = resolve_device(self.device)
        module = self._module_on(device)
        step = self._inference_batch_size()
        out = []
        with torch.inference_mode(), _exact_float32(device):
            for n, batch in inference_batches(source, step, device):
                out.append(fn(module, batch)[:n].double().cpu())
        return torch.cat(out).numpy()

    def _inference_batch_size(self) -> int:
        return self.batch_size if isinstance(self.batch_size, Integral) else 128

    def _module_on(self, device: torch.device) -> nn.Module:
        """The fitted network on ``device``: ``module_`` itself on the CPU, else a copy (``module_`` stays put)."""
        on_device = all(t.device == device for t in self.module_.state_dict().values())
        if on_device:
            return self.module_.eval()
        return copy.deepcopy(self.module_).to(device).eval()

    def _logits(self, X) -> np.ndarray:
        return self._batched(X, lambda network, tokens: network(tokens))

    def _head_outputs(self, X, fn) -> np.ndarray:
        """``fn(head, patches)`` on the standardised patch tokens (for inspection methods)."""
        return self._batched(X, lambda network, tokens: fn(network.head, network.split(tokens)[1]))

    def decision_function(self, X) -> np.ndarray:
        """Logits of the head.

        Returns
        -------
        ndarray of shape (n_clips, n_classes), or (n_clips,) for binary ``y``
            For binary single-label ``y``, one positive-class score per clip
            (the log-odds ``log(p_1 / p_0)`` of :meth:`predict_proba`), as in
            scikit-learn.
        """
        logits = self._logits(X)
        if self._target_kind == "binary":
            if self._sigmoid_outputs:  # log-odds of the normalised sigmoids of predict_proba
                return np.logaddexp(0.0, -logits[:, 0]) - np.logaddexp(0.0, -logits[:, 1])
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, float64 of shape (n_clips, n_classes).

        Multi-label: independent sigmoids, strictly inside (0, 1). Single-label:
        rows sum to 1 (softmax, or normalised sigmoids for the sigmoid losses).
        """
        logits = self._logits(X)
        if self._target_kind == "multilabel" or self._sigmoid_outputs:
            eps = np.finfo(np.float64).eps
            proba = np.clip(expit(logits), eps, 1 - eps)
            if self._target_kind == "multilabel":
                return proba
            return proba / proba.sum(axis=1, keepdims=True)
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """Labels from ``classes_``, or a 0/1 indicator matrix for multi-label ``y``."""
        logits = self._logits(X)
        if self._target_kind == "multilabel":
            return (logits > 0).astype(self._y_dtype)
        return self.classes_[np.argmax(logits, axis=1)]

    # -- scikit-learn plumbing -------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.classifier_tags.multi_label = True
        tags.target_tags.multi_output = True
        return tags

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        module = state.get("module_")
        if module is not None and any(t.device.type != "cpu" for t in module.state_dict().values()):
            state["module_"] = copy.deepcopy(module).cpu()  # a GPU-fitted probe unpickles on a CPU machine
        return state


@contextlib.contextmanager
def _exact_float32(device: torch.device):
    """Full float32 matrix products on CUDA (no TF32) for the duration, restored afterwards."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def with_shared_parameters_doc(cls):
    """Class decorator: put :data:`SHARED_PARAMETERS_DOC` and :data:`SHARED_ATTRIBUTES_DOC` where the
    docstring says ``{shared_parameters}`` and ``{shared_attributes}``."""
    if cls.__doc__:
        cls.__doc__ = cls.__doc__.replace("{shared_parameters}", SHARED_PARAMETERS_DOC).replace(
            "{shared_attributes}", SHARED_ATTRIBUTES_DOC)
    return cls


def store_parameters(estimator: BaseEstimator, arguments: dict) -> None:
    """Store ``__init__`` arguments (``locals()``) unchanged as attributes, the scikit-learn way."""
    for name, value in arguments.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)
