"""The probes' estimator: parameters, ``fit``, outputs; the base class of every probe.

A probe is a small head trained on frozen token maps ``X`` of shape
``(n_clips, n_tokens, dim)`` (or ``(n_clips, dim)``, one token per clip). The
first ``prefix_tokens`` tokens (``[cls]`` and the like) are kept apart from
the patch tokens that the heads pool over.

The parts live next door: the network and its token normalisation in
:mod:`._network`, the measured ``"auto"`` rules in :mod:`._auto`, input
validation in :mod:`._input`, the fitted state in :mod:`._fitted`, the frozen
training plan in :mod:`._plan` and the training engine in :mod:`._training`. Their public names stay importable
from here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._torch import resolve_device
from ._auto import (  # noqa: F401
    _AUTO_EPOCHS,
    AUTO_CENTER_COHERENCE,
    AUTO_CENTER_OFFSET_RATIO,
    auto_batch_size,
    auto_learning_rate,
    auto_max_iter,
    direction_coherence,
    offset_ratio,
)
from ._batches import exact_float32, inference_batches
from ._diagnostics import check_training
from ._docs import SHARED_ATTRIBUTES_DOC, SHARED_PARAMETERS_DOC, with_shared_parameters_doc
from ._fitted import FittedStateMixin
from ._frames import FrameScoresMixin
from ._input import _TOKEN_DTYPES, TokenInputMixin, check_groups  # noqa: F401
from ._network import NORMALIZATIONS, ProbeNetwork, TokenMoments, feature_moments, normalisation_stats, raw_moments  # noqa: F401
from ._plan import TrainingPlan, make_plan
from ._targets import encode_targets
from ._tokens import TokenSource
from ._training import TrainResult, stage_tokens, train_module
from .losses import LOSSES, make_loss

__all__ = ["BaseProbeClassifier", "FitProblem", "NORMALIZATIONS", "ProbeNetwork", "SHARED_ATTRIBUTES_DOC",
           "SHARED_PARAMETERS_DOC", "TokenMoments", "auto_batch_size", "auto_learning_rate", "direction_coherence",
           "feature_moments", "offset_ratio", "store_parameters", "with_shared_parameters_doc"]


@dataclass
class FitProblem:
    """What ``fit`` trains on, handed to :meth:`BaseProbeClassifier._training_problem`.

    ``targets``: class indices ``(n,)`` for the softmax loss, else a 0/1
    indicator ``(n, n_outputs)``; ``criterion``: the training loss;
    ``plan``: the frozen :class:`~skprobe.probes._plan.TrainingPlan`;
    ``groups``: the group label of every clip (or None), which every split
    inside ``fit`` keeps on one side; ``solved``: set by a hook that trained
    the network itself (the linear probe's logistic regression), so that
    ``fit`` trains nothing more.
    """

    targets: torch.Tensor
    n_outputs: int
    criterion: nn.Module
    plan: TrainingPlan
    groups: np.ndarray | None = None
    solved: TrainResult | None = None

    @property
    def batch_size(self) -> int:
        return self.plan.batch_size

    @property
    def seed(self) -> int:
        return self.plan.seed


class BaseProbeClassifier(FittedStateMixin, TokenInputMixin, FrameScoresMixin, ClassifierMixin, BaseEstimator):
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

    def _build_network(self, dim: int, n_outputs: int) -> ProbeNetwork:
        """The network ``fit`` trains: :meth:`_build_head` in a :class:`ProbeNetwork`."""
        return ProbeNetwork(self._build_head(dim, n_outputs), self.prefix_tokens, self.normalize_tokens)

    # -- training --------------------------------------------------------------------
    def fit(self, X, y, groups=None):
        """Train the probe on token maps.

        Parameters
        ----------
        X : array-like of shape (n_clips, n_tokens, dim) or (n_clips, dim)
            Frozen-encoder tokens (float16/32/64). The token count may differ
            between ``fit`` and ``predict``.
        y : array-like of shape (n_clips,) or (n_clips, n_classes)
            Class labels (any type) or a 0/1 multi-label indicator matrix.
        groups : array-like of shape (n_clips,), optional
            Group label of every clip (the recording it was cut from, the
            speaker, the site). Every split ``fit`` makes of the clips keeps
            a group on one side: the folds of the linear probe's ``cv``
            (``GroupKFold`` for an int ``cv``; a splitter gets them in
            ``split(X, y, groups)``), the held-out clips of the attentive and
            prototypical probes' choice of settings, and the validation clips
            of ``early_stopping`` (whole groups, in a random order, until
            ``validation_fraction`` of the clips). Only these splits use them.

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
            return self._fit(X, y, groups)
        except BaseException:
            self._forget_fit()
            raise

    def _fit(self, X, y, groups):
        self._validate_params()
        self._check_params()
        device = resolve_device(self.device)
        # on a GPU the values are checked while stage_tokens uploads them, below
        tokens = self._validate_tokens(X, reset=True, check_values=device.type != "cuda")
        targets = encode_targets(y, len(tokens))
        groups = check_groups(groups, len(tokens))
        if len(targets.classes) < 2 and targets.kind != "multilabel":
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; y holds only one class "
                f"({targets.classes[0]!r})"
            )
        loss = self._resolve_loss(targets.kind)
        self._set_fitted(classes_=targets.classes, target_type_=targets.kind, _sigmoid_outputs=loss != "ce",
                         _y_dtype=targets.dtype, loss_=loss)
        target_tensor = torch.from_numpy(targets.indices if loss == "ce" else targets.indicator)
        plan = self._training_plan(len(tokens), tokens.shape[2], device)
        self._set_fitted(max_iter_=plan.max_iter, learning_rate_=plan.learning_rate, batch_size_=plan.batch_size)
        resident = stage_tokens(tokens, plan) if device.type == "cuda" else None  # kept there if they fit
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(plan.seed)
            network = self._build_network(tokens.shape[2], len(self.classes_))
            criterion = make_loss(loss, gamma_neg=self.asl_gamma_neg, gamma_pos=self.asl_gamma_pos,
                                  clip=self.asl_clip)
            problem = FitProblem(targets=target_tensor, n_outputs=len(self.classes_), criterion=criterion, plan=plan,
                                 groups=groups)
            trainable, train_tokens, train_resident = self._training_problem(network, tokens, plan.device, resident,
                                                                             problem)
            del resident  # what stays on the device is train_resident
            plan = plan.with_schedule(learning_rate=self.learning_rate_, max_iter=self.max_iter_)  # hooks may choose
            result = problem.solved
            if result is None:
                result = train_module(trainable, train_tokens, target_tensor, plan, criterion=criterion,
                                      stratify=targets.indices, groups=groups, resident=train_resident)
            del train_resident
        if result.module is not trainable:
            raise RuntimeError("the training engine trained a copy of the probe's network")  # skorch trains in place
        self._set_fitted(**self._fitted_attributes(network.cpu().eval(), result, plan, len(tokens)))
        # the trained module on what it trained on: the linear probe's pooled features, not the tokens again
        check_training(self, trainable.eval(), train_tokens, target_tensor, loss, result.loss_curve)
        return self

    def _training_plan(self, n_clips: int, dim: int, device: torch.device) -> TrainingPlan:
        """The frozen plan of this ``fit``: parameters with ``"auto"`` resolved, process-wide options read once."""
        batch_size = auto_batch_size(n_clips) if self.batch_size == "auto" else self.batch_size
        max_iter = self._resolve_max_iter(self._n_fit(n_clips), batch_size)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        return make_plan(device, batch_size=batch_size,
                         learning_rate=self._resolve_learning_rate(dim), weight_decay=self.weight_decay,
                         max_iter=max_iter, no_decay=tuple(f"head.{p}" for p in self._no_decay),
                         early_stopping=self.early_stopping, validation_fraction=self.validation_fraction,
                         n_iter_no_change=self.n_iter_no_change, tol=self.tol, seed=seed, verbose=self.verbose)

    def _n_fit(self, n_clips: int) -> int:
        """Clips trained on: all, or those left after the early-stopping hold-out."""
        return n_clips - (max(1, round(self.validation_fraction * n_clips)) if self.early_stopping else 0)

    def _resolve_max_iter(self, n_fit: int, batch_size: int) -> int:
        return auto_max_iter(n_fit, batch_size, self._auto_min_steps) if self.max_iter == "auto" else int(self.max_iter)

    def _fitted_attributes(self, module: ProbeNetwork, result: TrainResult, plan: TrainingPlan,
                           n_clips: int) -> dict:
        """The fitted attributes a finished training leaves (a probe adds its own to the dict)."""
        return dict(
            normalize_tokens_=module.normalize,
            module_=module,  # fitted attributes live on the CPU, whatever the device
            n_iter_=result.n_iter,
            n_steps_=result.n_iter * -(-self._n_fit(n_clips) // plan.batch_size),
            loss_curve_=result.loss_curve,
            validation_loss_curve_=result.validation_loss_curve if plan.early_stopping else None,
            best_validation_loss_=result.best_validation_loss,
            n_trainable_parameters_=sum(p.numel() for p in module.parameters() if p.requires_grad),
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
        ``network.normalize`` before returning, and set ``problem.solved``
        when it trained the module itself.
        """
        network.calibrate(tokens if resident is None else resident)
        return network, tokens, resident

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
        with torch.inference_mode(), exact_float32(device):
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
        if self.target_type_ == "binary":
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
        if self.target_type_ == "multilabel" or self._sigmoid_outputs:
            eps = np.finfo(np.float64).eps
            proba = np.clip(expit(logits), eps, 1 - eps)
            if self.target_type_ == "multilabel":
                return proba
            return proba / proba.sum(axis=1, keepdims=True)
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """Labels from ``classes_``, or a 0/1 indicator matrix for multi-label ``y``."""
        logits = self._logits(X)
        if self.target_type_ == "multilabel":
            return (logits > 0).astype(self._y_dtype)
        return self.classes_[np.argmax(logits, axis=1)]

    # -- scikit-learn plumbing -------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.classifier_tags.multi_label = True
        tags.target_tags.multi_output = True
        return tags


def store_parameters(estimator: BaseEstimator, arguments: dict) -> None:
    """Store ``__init__`` arguments (``locals()``) unchanged as attributes, the scikit-learn way."""
    for name, value in arguments.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)
