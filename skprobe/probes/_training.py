"""The training engine behind every probe's ``fit``: skorch, fed batches straight from the tokens.

skorch runs the loop (epochs, callbacks, history, early stopping, progress);
skprobe feeds it whole batches (:class:`TokenBatchIterator`) read out of the
token array, converted on the way, and already on the device, instead of
skorch's default per-sample ``DataLoader`` collation, which dominates the cost
of small probe heads. On a GPU the tokens are kept on the device when they fit
in the memory budget of :func:`training_options`, else streamed through pinned
buffers by a prefetching thread (see :mod:`skprobe.probes._batches`).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping, LRScheduler, ProgressBar
from skorch.dataset import get_len
from skorch.helper import predefined_split
from torch import nn

from ._batches import HostPrefetcher, NonFiniteTokens, upload
from ._tokens import TokenSource, check_chunks

__all__ = ["TokenBatchIterator", "TokenDataset", "TrainResult", "TrainingOptions",
           "get_training_options", "set_training_options", "stage_tokens", "train_module", "training_options"]

# Share of free GPU memory the token set may take to be kept on the device when no budget is set.
_ON_DEVICE_FRACTION = 0.5
_BUDGET_ENV = "SKPROBE_DEVICE_MEMORY_BUDGET"
#: Largest budget in bytes (1 PiB): a larger number is a typo, not a memory size.
_MAX_BUDGET_BYTES = 2**50

#: Read the batch losses back once per epoch (see ``_ProbeNet``); False restores skorch's ``item()`` per batch.
DEFER_LOSS_SYNC = True


@dataclass
class TrainingOptions:
    """Process-wide settings of the probes' training engine (see :func:`training_options`)."""

    device_memory_budget: float | int | None = None
    autocast_bf16: bool = True
    prefetch: int = 2


_OPTIONS = TrainingOptions()


def get_training_options() -> TrainingOptions:
    """The current :class:`TrainingOptions` (a copy)."""
    options = TrainingOptions(**vars(_OPTIONS))
    if options.device_memory_budget is None and os.environ.get(_BUDGET_ENV):
        options.device_memory_budget = _parse_budget(os.environ[_BUDGET_ENV])
    return options


def _parse_budget(text: str) -> float | int:
    """The budget written in ``SKPROBE_DEVICE_MEMORY_BUDGET``: a share (float) or a whole number of bytes (int)."""
    try:
        value: float | int = float(text)
    except ValueError:
        value = float("nan")
    if math.isfinite(value) and value > 1 and value.is_integer():
        value = int(value)
    return _check_budget(value, _BUDGET_ENV, f"got {text!r}", environment=True)


def _check_budget(value, name: str, got: str, environment: bool = False) -> float | int | None:
    """``value`` as a share in (0, 1] (float) or a number of bytes in [1, 2**50] (int); ValueError naming ``name``."""
    if value is None and not environment:
        return None
    if isinstance(value, Integral) and not isinstance(value, bool) and 1 <= value <= _MAX_BUDGET_BYTES:
        return int(value)
    if isinstance(value, Real) and not isinstance(value, (bool, Integral)) and 0 < value <= 1:  # False for NaN
        return float(value)
    what = "a share of free GPU memory in (0, 1]" + ("" if environment else " (float)")
    raise ValueError(f"{name} must be {'' if environment else 'None, '}{what} or a whole number of bytes from 1 "
                     f"to 2**50{'' if environment else ' (int)'}, {got}")


def set_training_options(**options) -> TrainingOptions:
    """Set training-engine options of the probes for the rest of the process; returns the previous ones.

    Same parameters as :func:`training_options`.

    Examples
    --------
    >>> previous = set_training_options(prefetch=3)
    >>> _ = set_training_options(**vars(previous))
    """
    unknown = set(options) - set(vars(_OPTIONS))
    if unknown:
        raise TypeError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(vars(_OPTIONS))}")
    if "device_memory_budget" in options:
        budget = options["device_memory_budget"]
        options["device_memory_budget"] = _check_budget(budget, "device_memory_budget", f"got {budget!r}")
    if "prefetch" in options and (not isinstance(options["prefetch"], int) or options["prefetch"] < 1):
        raise ValueError(f"prefetch must be a positive int, got {options['prefetch']!r}")
    previous = TrainingOptions(**vars(_OPTIONS))
    for name, value in options.items():
        setattr(_OPTIONS, name, value)
    return previous


class _Unchanged:
    """Default of :func:`training_options`' parameters: the option keeps its current value."""

    def __repr__(self) -> str:
        return "unchanged"


_UNCHANGED = _Unchanged()


@contextlib.contextmanager
def training_options(*, device_memory_budget: float | int | None | _Unchanged = _UNCHANGED,
                     autocast_bf16: bool | _Unchanged = _UNCHANGED, prefetch: int | _Unchanged = _UNCHANGED):
    """Set training-engine options of the probes for a ``with`` block.

    Options not given keep their current value; the defaults below are the
    process's settings until :func:`set_training_options` changes them.

    Parameters
    ----------
    device_memory_budget : float, int or None, default=None
        GPU memory the training tokens may occupy to be kept on the device
        (converted to float16 where they fit its range): a share of the free
        memory at ``fit`` time in ``(0, 1]`` (float), or a whole number of
        bytes from 1 to ``2**50`` (int); anything else (NaN, 0, negative,
        beyond these ranges) is a ``ValueError``. ``None``
        reads the environment variable ``SKPROBE_DEVICE_MEMORY_BUDGET`` (same
        meaning; it also reaches joblib's worker processes) or else uses half of
        the free memory. Tokens that do not fit are streamed from pinned host
        buffers. A budget below one batch of tokens is an error.
    autocast_bf16 : bool, default=True
        Run the heads' forward pass under bfloat16 autocast on CUDA during
        training (no effect on the CPU or at inference, which stays float32).
        On by default: on an H200 it left the event-scene macro mAP within
        0.0012 of float32 for every probe (3 seeds) and brought the
        prototypical probe's AudioSet-20k-sized epoch from 4.0 s to 1.52 s
        (``docs/benchmarks/training.md``).
    prefetch : int, default=2
        Batches read ahead by the streaming thread.

    Examples
    --------
    >>> from skprobe.probes import get_training_options, training_options
    >>> with training_options(device_memory_budget=0.25):
    ...     get_training_options().device_memory_budget
    0.25
    """
    given = {"device_memory_budget": device_memory_budget, "autocast_bf16": autocast_bf16, "prefetch": prefetch}
    previous = set_training_options(**{k: v for k, v in given.items() if v is not _UNCHANGED})
    try:
        yield get_training_options()
    finally:
        set_training_options(**vars(previous))


class TokenDataset(torch.utils.data.Dataset):
    """Clips ``indices`` of a token source with their targets, as skorch sees them.

    Parameters
    ----------
    source : TokenSource
    targets : Tensor
        Targets of all clips of ``source`` (on ``device`` when ``resident``).
    indices : ndarray of int
        The clips of this dataset (sorted).
    device : torch.device
    resident : Tensor, optional
        All clips of ``source`` already on ``device``.
    prefetch : int
    """

    def __init__(self, source: TokenSource, targets: torch.Tensor, indices: np.ndarray, device: torch.device,
                 resident: torch.Tensor | None = None, prefetch: int = 2) -> None:
        self.source, self.targets, self.indices = source, targets, indices
        self.device, self.resident, self.prefetch = device, resident, prefetch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        return torch.from_numpy(self.source.take(np.array([j])))[0], self.targets[j]


class TokenBatchIterator:
    """skorch iterator over whole batches of a :class:`TokenDataset`, delivered on its device.

    Each batch's clip indices are sorted (reads in file order; the order
    inside a batch does not matter to the loss). Shuffling draws from torch's
    global generator, which ``fit`` seeds.
    """

    def __init__(self, dataset: TokenDataset, batch_size: int = 128, shuffle: bool = False, **_: object) -> None:
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self):
        data = self.dataset
        n = len(data)
        order = torch.randperm(n).numpy() if self.shuffle else np.arange(n)
        batches = [np.sort(data.indices[order[s : s + self.batch_size]]) for s in range(0, n, self.batch_size)]
        targets_on = data.targets.device
        if data.resident is not None:
            for idx in batches:
                idx_t = torch.from_numpy(idx).to(data.resident.device)
                yield data.resident[idx_t], data.targets[idx_t.to(targets_on)]
            return
        if data.device.type == "cuda":
            tokens = HostPrefetcher(data.source, batches, data.device, data.prefetch)
        else:
            tokens = (torch.from_numpy(data.source.take(idx)) for idx in batches)
        for idx, xb in zip(batches, tokens):
            yield xb, data.targets[torch.from_numpy(idx).to(targets_on)]


class _Interrupted(BaseException):
    """Carries a Ctrl-C (``KeyboardInterrupt``, its ``__cause__``) past skorch, which would swallow it."""


class _StopTraining(Exception):
    """The early-stopping rule met: training ends normally."""


class _EarlyStopping(EarlyStopping):
    """skorch's ``EarlyStopping``, signalling the stop with :class:`_StopTraining`.

    skorch stops by raising ``KeyboardInterrupt``; giving the rule its own
    exception lets ``_ProbeNet`` tell it apart from the user's Ctrl-C.
    """

    def on_epoch_end(self, net, **kwargs):
        try:
            super().on_epoch_end(net, **kwargs)
        except KeyboardInterrupt:
            if self.misses_ != self.patience:  # not the rule: the user pressed Ctrl-C
                raise
            raise _StopTraining from None


class _ProbeNet(NeuralNet):
    """skorch ``NeuralNet`` with three changes to its loop.

    A ``KeyboardInterrupt`` (Ctrl-C) leaves ``fit``: skorch's ``partial_fit``
    catches it and returns a half-trained network as if training had ended,
    so the loop turns it into :class:`_Interrupted`, which skorch lets pass
    and :func:`train_module` raises as the original ``KeyboardInterrupt``
    (early stopping ends the loop with :class:`_StopTraining` instead).

    The batch losses are read back once per epoch instead of once per batch:
    skorch's ``loss.item()`` after every step makes the host wait for the
    device, so on a GPU it cannot queue the next step while the current one
    runs. The history holds the same per-batch values once the epoch ends
    (callbacks that read a batch's loss during the epoch, the progress bar,
    get the per-batch path: ``defer_loss_sync = False``). And the forward
    pass may run under bfloat16 autocast (CUDA only).
    """

    autocast_dtype: torch.dtype | None = None
    defer_loss_sync: bool = True

    def fit_loop(self, X, y=None, **fit_params):
        try:
            return super().fit_loop(X, y, **fit_params)
        except _StopTraining:
            return self
        except KeyboardInterrupt as exc:
            raise _Interrupted from exc

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        if iterator is None or not self.defer_loss_sync:
            return super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)
        losses = []
        for batch in iterator:
            self.notify("on_batch_begin", batch=batch, training=training)
            step = step_fn(batch, **fit_params)
            losses.append(step["loss"].detach())
            self.history.record_batch(prefix + "_batch_size", get_len(batch[0]))
            self.notify("on_batch_end", batch=batch, training=training, **step)
        if losses:
            values = torch.stack(losses).float().cpu().tolist()  # the epoch's one device-to-host sync
            for record, value in zip(self.history[-1]["batches"][-len(losses):], values):
                record[prefix + "_loss"] = value
        self.history.record(prefix + "_batch_count", len(losses))

    def infer(self, x, **fit_params):
        if self.autocast_dtype is None or not self.module_.training:
            return super().infer(x, **fit_params)
        with torch.autocast("cuda", dtype=self.autocast_dtype):
            out = super().infer(x, **fit_params)
        return out.float()


@dataclass
class TrainResult:
    """What a training run leaves behind (copied into the estimator's fitted attributes)."""

    module: nn.Module
    n_iter: int
    loss_curve: list[float]
    validation_loss_curve: list[float] = field(default_factory=list)
    best_validation_loss: float | None = None
    resident_dtype: torch.dtype | None = None


def validation_split(n: int, fraction: float, stratify: np.ndarray | None, seed: int,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and held-out clip indices, ``fraction`` of ``n`` held out (stratified where it can)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    n_valid = max(1, int(round(fraction * n)))
    if n - n_valid < 1:
        raise ValueError(
            f"validation_fraction={fraction} leaves no training sample out of {n}; lower it or "
            "set early_stopping=False"
        )
    try:
        parts = train_test_split(idx, test_size=n_valid, random_state=seed, stratify=stratify)
    except ValueError:  # too few samples per class to stratify
        parts = train_test_split(idx, test_size=n_valid, random_state=seed)
    return np.sort(parts[0]), np.sort(parts[1])


def device_budget(source: TokenSource, batch_size: int, device: torch.device,
                  budget: float | int | None) -> int | None:
    """Bytes the tokens may take on ``device`` (None on the CPU); ValueError when one batch does not fit."""
    batch_bytes = min(batch_size, len(source)) * source.shape[1] * source.shape[2] * 2  # float16 at least
    if isinstance(budget, int) and budget < batch_bytes:
        raise ValueError(
            f"device_memory_budget={budget:,} bytes cannot hold one batch of {min(batch_size, len(source))} clips "
            f"x {source.shape[1]} tokens x {source.shape[2]} dims ({batch_bytes:,} bytes in float16); raise the "
            "budget (skprobe.probes.training_options) or lower batch_size"
        )
    if device.type != "cuda":
        return None
    if isinstance(budget, int):
        return budget
    free, _ = torch.cuda.mem_get_info(device)
    share = _ON_DEVICE_FRACTION if budget is None else budget
    if share * free < batch_bytes:
        raise ValueError(
            f"device_memory_budget={share} of the free GPU memory ({free:,} bytes) cannot hold one batch of "
            f"{batch_bytes:,} bytes; raise the budget or lower batch_size"
        )
    return int(share * free)


def _resident_tokens(source: TokenSource, device: torch.device, budget: int | None,
                     check_finite: bool = False) -> torch.Tensor | None:
    """The tokens on ``device`` when they fit in ``budget`` (in their dtype, else float16), else None."""
    if budget is None:
        return None
    n_values = len(source) * source.shape[1] * source.shape[2]
    for dtype in dict.fromkeys([source.dtype, torch.float16]):
        if n_values * (2 if dtype == torch.float16 else 4) <= budget:
            resident = upload(source, device, dtype, check_finite=check_finite)
            if resident is not None:
                return resident
    return None


def stage_tokens(source: TokenSource, batch_size: int, device: torch.device, name: str = "X") -> torch.Tensor | None:
    """Validate the training tokens and, on a GPU, copy them to the device when they fit the budget.

    On CUDA, tokens within the memory budget of :func:`training_options` are
    uploaded once and checked for NaN and infinity on the device on the way,
    so ``fit`` reads them from the host once (the copy) instead of three
    times (validation, normalisation statistics, copy). Returns the resident
    tokens, or None after a chunked check on the host (CPU, or tokens that
    stream). A bad value raises the ``ValueError`` of
    :func:`~skprobe.probes._tokens.check_chunks` naming the first bad clip;
    running out of GPU memory raises ``MemoryError`` naming the budget.
    """
    if device.type != "cuda":
        check_chunks(source, name)
        return None
    options = get_training_options()
    budget = device_budget(source, batch_size, device, options.device_memory_budget)
    try:
        resident = _resident_tokens(source, device, budget, check_finite=True)
    except NonFiniteTokens:
        torch.cuda.empty_cache()
        check_chunks(source, name)  # the host check words the error (NaN, infinity, beyond float32)
        raise RuntimeError("a token chunk was not finite on the device but passed the host check") from None
    except torch.OutOfMemoryError:
        message = _oom_message(source, device, batch_size, options)
    else:
        if resident is None:  # streamed: checked on the host
            check_chunks(source, name)
        return resident
    torch.cuda.empty_cache()  # outside the except block, so the failed upload's tensors are already freed
    raise MemoryError(message)


def train_module(
    module: nn.Module,
    X: torch.Tensor | TokenSource,
    y: torch.Tensor,
    *,
    criterion: nn.Module,
    learning_rate: float,
    weight_decay: float,
    no_decay: tuple[str, ...],
    max_iter: int,
    batch_size: int,
    early_stopping: bool,
    validation_fraction: float,
    n_iter_no_change: int,
    tol: float,
    device: torch.device,
    verbose: int,
    seed: int,
    stratify: np.ndarray | None = None,
    resident: torch.Tensor | None = None,
) -> TrainResult:
    """Train ``module`` on ``(X, y)`` with AdamW, a per-batch cosine schedule and optional early stopping.

    ``X`` is a :class:`~skprobe.probes._tokens.TokenSource` (or a CPU tensor
    of tokens); ``resident`` is all of it already on ``device`` (from
    :func:`stage_tokens`). ``no_decay`` lists parameter-name patterns (fnmatch) excluded
    from weight decay. Must be called inside a seeded RNG context:
    initialisation, shuffling and the validation split all derive from
    ``seed``. On CUDA the options of :func:`training_options` apply; running
    out of GPU memory raises ``MemoryError`` naming the budget to lower.
    """
    source = X if isinstance(X, TokenSource) else TokenSource(X.detach().cpu().numpy())
    options = get_training_options()
    budget = None if resident is not None else device_budget(source, batch_size, device,
                                                             options.device_memory_budget)
    if early_stopping:
        train_idx, valid_idx = validation_split(len(source), validation_fraction, stratify, seed)
    else:
        train_idx, valid_idx = np.arange(len(source)), None
    try:
        if resident is None:
            resident = _resident_tokens(source, device, budget)
        y = y.to(device) if device.type == "cuda" else y
        result = _fit(module, source, y, resident, train_idx, valid_idx, criterion=criterion,
                      learning_rate=learning_rate, weight_decay=weight_decay, no_decay=no_decay, max_iter=max_iter,
                      batch_size=batch_size, device=device, verbose=verbose, n_iter_no_change=n_iter_no_change,
                      tol=tol, options=options)
    except torch.OutOfMemoryError:
        message = _oom_message(source, device, batch_size, options)
    else:
        return result
    resident = None
    torch.cuda.empty_cache()
    raise MemoryError(message)


def _oom_message(source: TokenSource, device: torch.device, batch_size: int, options: TrainingOptions) -> str:
    size = len(source) * source.shape[1] * source.shape[2] * 2 / 1e9
    return (
        f"{device} ran out of memory while fitting the probe on {len(source):,} clips x {source.shape[1]} tokens x "
        f"{source.shape[2]} dims ({size:.2f} GB in float16). Lower the GPU memory budget for resident tokens "
        f"(skprobe.probes.training_options(device_memory_budget=...) or the {_BUDGET_ENV} environment variable; "
        f"now {options.device_memory_budget!r}, None meaning {_ON_DEVICE_FRACTION} of the free memory) so that "
        f"the tokens stream from host memory, or lower batch_size (now {batch_size})"
    )


def _fit(module, source, y, resident, train_idx, valid_idx, *, criterion, learning_rate, weight_decay, no_decay,
         max_iter, batch_size, device, verbose, n_iter_no_change, tol, options) -> TrainResult:
    n_batches = -(-len(train_idx) // batch_size)
    callbacks: list = [
        ("cosine", LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                               T_max=max(1, max_iter * n_batches), step_every="batch")),
    ]
    train_split = None
    if valid_idx is not None:
        train_split = predefined_split(TokenDataset(source, y, valid_idx, device, resident, options.prefetch))
        callbacks.append(("early_stopping", _EarlyStopping(
            monitor="valid_loss", patience=n_iter_no_change, threshold=tol,
            threshold_mode="rel", lower_is_better=True, load_best=True, sink=_sink(verbose))))
    if verbose >= 2:
        callbacks.append(("progress", ProgressBar()))

    net = _ProbeNet(
        module=module,
        criterion=criterion,
        optimizer=torch.optim.AdamW,
        optimizer__weight_decay=weight_decay,
        optimizer__param_groups=[(pattern, {"weight_decay": 0.0}) for pattern in no_decay],
        lr=learning_rate,
        max_epochs=max_iter,
        batch_size=batch_size,
        iterator_train=TokenBatchIterator,
        iterator_valid=TokenBatchIterator,
        iterator_train__shuffle=True,
        train_split=train_split,
        callbacks=callbacks,
        device=device,
        verbose=verbose,
    )
    if options.autocast_bf16 and device.type == "cuda":
        net.autocast_dtype = torch.bfloat16
    net.defer_loss_sync = DEFER_LOSS_SYNC and verbose < 2  # the progress bar shows each batch's loss as it comes
    if verbose == 0:
        net.set_params(callbacks__print_log=None)
    try:
        net.fit(TokenDataset(source, y, train_idx, device, resident, options.prefetch), None)
    except _Interrupted as exc:
        raise exc.__cause__ from None

    history = net.history
    loss_curve = [float(v) for v in history[:, "train_loss"]]
    result = TrainResult(module=net.module_, n_iter=len(history), loss_curve=loss_curve,
                         resident_dtype=None if resident is None else resident.dtype)
    if valid_idx is not None:
        result.validation_loss_curve = [float(v) for v in history[:, "valid_loss"]]
        result.best_validation_loss = min(result.validation_loss_curve)
    return result


def _sink(verbose: int):
    return print if verbose else (lambda *args, **kwargs: None)
