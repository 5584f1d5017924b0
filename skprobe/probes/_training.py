"""The training engine behind every probe's ``fit``: skorch, fed batches straight from the tokens.

skorch runs the loop (epochs, callbacks, history, early stopping, progress);
skprobe feeds it whole batches (:class:`TokenBatchIterator`) read out of the
token array, converted on the way, and already on the device, instead of
skorch's default per-sample ``DataLoader`` collation, which dominates the cost
of small probe heads. On a GPU the tokens are kept on the device when they fit
in the memory budget of the :class:`~skprobe.probes._plan.TrainingPlan`, else streamed through pinned
buffers by a prefetching thread (see :mod:`skprobe.probes._batches`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping, LRScheduler, ProgressBar
from skorch.dataset import get_len
from skorch.helper import predefined_split
from torch import nn

from ._batches import HostPrefetcher, NonFiniteTokens, upload
from ._config import (
    _BUDGET_ENV,
    _ON_DEVICE_FRACTION,
    TrainingOptions,
    get_training_options,
    set_training_options,
    training_options,
)
from ._plan import TrainingPlan
from ._tokens import TokenSource, check_chunks

__all__ = ["TokenBatchIterator", "TokenDataset", "TrainResult", "TrainingOptions",
           "get_training_options", "set_training_options", "stage_tokens", "train_module", "training_options"]

#: Read the batch losses back once per epoch (see ``_ProbeNet``); False restores skorch's ``item()`` per batch.
DEFER_LOSS_SYNC = True




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


def held_out_size(n: int, fraction: float) -> int:
    """Clips :func:`validation_split` holds out of ``n``: ``fraction`` of them, at least one."""
    return max(1, int(round(fraction * n)))


def validation_split(n: int, fraction: float, stratify: np.ndarray | None, seed: int,
                     groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and held-out clip indices, ``fraction`` of ``n`` held out (stratified where it can).

    With ``groups`` (one label per clip) whole groups are held out, drawn in
    a random order from ``seed`` until at least ``fraction`` of the clips
    are, and at least one group stays on the training side; no group is on
    both sides (the split is then not stratified).

    >>> validation_split(6, 0.3, None, 0, groups=np.array(["a", "a", "b", "b", "c", "c"]))
    (array([0, 1, 2, 3]), array([4, 5]))
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    n_valid = held_out_size(n, fraction)
    if n - n_valid < 1:
        raise ValueError(
            f"validation_fraction={fraction} leaves no training sample out of {n}; lower it or "
            "set early_stopping=False"
        )
    if groups is not None:
        return _group_split(groups, n_valid, seed)
    try:
        parts = train_test_split(idx, test_size=n_valid, random_state=seed, stratify=stratify)
    except ValueError:  # too few samples per class to stratify
        parts = train_test_split(idx, test_size=n_valid, random_state=seed)
    return np.sort(parts[0]), np.sort(parts[1])


def _group_split(groups: np.ndarray, n_valid: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if len(names) < 2:
        raise ValueError(f"groups holds one group ({names.tolist()[0]!r}), but fit holds out clips of whole groups "
                         "(for early stopping or a held-out choice of settings): pass at least 2 groups")
    order = np.random.default_rng(seed).permutation(len(names))
    n_held = min(int(np.searchsorted(np.cumsum(counts[order]), n_valid)) + 1, len(names) - 1)
    held = np.zeros(len(names), dtype=bool)
    held[order[:n_held]] = True
    return np.flatnonzero(~held[inverse]), np.flatnonzero(held[inverse])


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


def stage_tokens(source: TokenSource, plan: TrainingPlan, name: str = "X") -> torch.Tensor | None:
    """Validate the training tokens and, on a GPU, copy them to the device when they fit the plan's budget.

    On CUDA, tokens within ``plan.memory_budget`` (see
    :func:`~skprobe.probes.config_context`) are uploaded once and checked for
    NaN and infinity on the device on the way, so ``fit`` reads them from the
    host once (the copy) instead of three times (validation, normalisation
    statistics, copy). Returns the resident tokens, or None after a chunked
    check on the host (CPU, or tokens that stream). A bad value raises the
    ``ValueError`` of :func:`~skprobe.probes._tokens.check_chunks` naming the
    first bad clip; running out of GPU memory raises ``MemoryError`` naming
    the budget.
    """
    device = plan.device
    if device.type != "cuda":
        check_chunks(source, name)
        return None
    budget = device_budget(source, plan.batch_size, device, plan.memory_budget)
    try:
        resident = _resident_tokens(source, device, budget, check_finite=True)
    except NonFiniteTokens:
        torch.cuda.empty_cache()
        check_chunks(source, name)  # the host check words the error (NaN, infinity, beyond float32)
        raise RuntimeError("a token chunk was not finite on the device but passed the host check") from None
    except torch.OutOfMemoryError:
        message = _oom_message(source, plan)
    else:
        if resident is None:  # streamed: checked on the host
            check_chunks(source, name)
        return resident
    torch.cuda.empty_cache()  # outside the except block, so the failed upload's tensors are already freed
    raise MemoryError(message)


def train_module(module: nn.Module, X: torch.Tensor | TokenSource, y: torch.Tensor, plan: TrainingPlan, *,
                 criterion: nn.Module, stratify: np.ndarray | None = None, groups: np.ndarray | None = None,
                 resident: torch.Tensor | None = None) -> TrainResult:
    """Train ``module`` on ``(X, y)`` as ``plan`` says: AdamW, a per-batch cosine schedule, optional early stopping.

    ``X`` is a :class:`~skprobe.probes._tokens.TokenSource` (or a CPU tensor
    of tokens); ``resident`` is all of it already on ``plan.device`` (from
    :func:`stage_tokens`). Must be called inside a seeded RNG context:
    initialisation and shuffling draw from torch's generator, the validation
    split from ``plan.seed`` (stratified by ``stratify``, of whole groups
    with ``groups``: :func:`validation_split`). Running out of GPU memory raises
    ``MemoryError`` naming the budget to lower.
    """
    source = X if isinstance(X, TokenSource) else TokenSource(X.detach().cpu().numpy())
    device = plan.device
    budget = None if resident is not None else device_budget(source, plan.batch_size, device, plan.memory_budget)
    if plan.early_stopping:
        train_idx, valid_idx = validation_split(len(source), plan.validation_fraction, stratify, plan.seed, groups)
    else:
        train_idx, valid_idx = np.arange(len(source)), None
    try:
        if resident is None:
            resident = _resident_tokens(source, device, budget)
        y = y.to(device) if device.type == "cuda" else y
        result = _fit(module, source, y, resident, train_idx, valid_idx, criterion, plan)
    except torch.OutOfMemoryError:
        message = _oom_message(source, plan)
    else:
        return result
    resident = None
    torch.cuda.empty_cache()
    raise MemoryError(message)


def _oom_message(source: TokenSource, plan: TrainingPlan) -> str:
    size = len(source) * source.shape[1] * source.shape[2] * 2 / 1e9
    return (
        f"{plan.device} ran out of memory while fitting the probe on {len(source):,} clips x {source.shape[1]} "
        f"tokens x {source.shape[2]} dims ({size:.2f} GB in float16). Lower the GPU memory budget for resident "
        f"tokens (skprobe.probes.training_options(device_memory_budget=...) or the {_BUDGET_ENV} environment "
        f"variable; now {plan.memory_budget!r}, None meaning {_ON_DEVICE_FRACTION} of the free memory) so that "
        f"the tokens stream from host memory, or lower batch_size (now {plan.batch_size})"
    )


def _fit(module, source, y, resident, train_idx, valid_idx, criterion, plan: TrainingPlan) -> TrainResult:
    device, verbose = plan.device, plan.verbose
    n_batches = -(-len(train_idx) // plan.batch_size)
    callbacks: list = [
        ("cosine", LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                               T_max=max(1, plan.max_iter * n_batches), step_every="batch")),
    ]
    train_split = None
    if valid_idx is not None:
        train_split = predefined_split(TokenDataset(source, y, valid_idx, device, resident, plan.prefetch))
        callbacks.append(("early_stopping", _EarlyStopping(
            monitor="valid_loss", patience=plan.n_iter_no_change, threshold=plan.tol,
            threshold_mode="rel", lower_is_better=True, load_best=True, sink=_sink(verbose))))
    if verbose >= 2:
        callbacks.append(("progress", ProgressBar()))

    net = _ProbeNet(
        module=module,
        criterion=criterion,
        optimizer=torch.optim.AdamW,
        optimizer__weight_decay=plan.weight_decay,
        optimizer__param_groups=[(pattern, {"weight_decay": 0.0}) for pattern in plan.no_decay],
        # one kernel for all parameters: on the CPU 3.4 times faster than the per-tensor loop for the attentive
        # probe's 2.1 M parameters (benchmarks/bench_step_kernels.py)
        optimizer__fused=device.type in ("cpu", "cuda"),
        lr=plan.learning_rate,
        max_epochs=plan.max_iter,
        batch_size=plan.batch_size,
        iterator_train=TokenBatchIterator,
        iterator_valid=TokenBatchIterator,
        iterator_train__shuffle=True,
        train_split=train_split,
        callbacks=callbacks,
        device=device,
        verbose=verbose,
    )
    net.autocast_dtype = plan.autocast_dtype
    net.defer_loss_sync = DEFER_LOSS_SYNC and verbose < 2  # the progress bar shows each batch's loss as it comes
    if verbose == 0:
        net.set_params(callbacks__print_log=None)
    try:
        net.fit(TokenDataset(source, y, train_idx, device, resident, plan.prefetch), None)
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
