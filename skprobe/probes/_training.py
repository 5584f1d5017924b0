"""The training engine behind every probe's ``fit``: skorch with tensor batching.

skorch runs the loop (epochs, callbacks, history, early stopping, progress);
skprobe feeds it batches sliced straight out of one contiguous token tensor
(kept on the GPU when it fits, else copied through a pinned buffer) instead of
skorch's default per-sample ``DataLoader`` collation, which dominates the cost
of small probe heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping, LRScheduler, ProgressBar
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from torch import nn

__all__ = ["TensorBatchIterator", "TrainResult", "train_module"]

# Fraction of free GPU memory the token set may take to be kept on the device.
_ON_DEVICE_FRACTION = 0.5


class TensorBatchIterator:
    """skorch iterator over ``(X[idx], y[idx])`` slices of a :class:`~skorch.dataset.Dataset`.

    Parameters
    ----------
    dataset : skorch Dataset
        Holds ``X`` and ``y`` as tensors with the samples on axis 0.
    batch_size : int
    shuffle : bool, default=False
    pin_memory : bool, default=False
        Gather CPU batches into a reused pinned buffer (for fast host-to-GPU copies).
    """

    def __init__(self, dataset: Dataset, batch_size: int = 128, shuffle: bool = False,
                 pin_memory: bool = False, **_: object) -> None:
        self.X, self.y = dataset.X, dataset.y
        self.batch_size, self.shuffle = batch_size, shuffle
        self.pin = pin_memory and self.X.device.type == "cpu" and torch.cuda.is_available()
        self._buffer: torch.Tensor | None = None

    def __len__(self) -> int:
        return -(-len(self.X) // self.batch_size)

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        if not self.pin:
            return self.X[idx]
        shape = (len(idx),) + tuple(self.X.shape[1:])
        if self._buffer is None or self._buffer.shape[0] < len(idx):
            self._buffer = torch.empty(shape, dtype=self.X.dtype).pin_memory()
        out = self._buffer[: len(idx)]
        torch.index_select(self.X, 0, idx, out=out)
        return out

    def __iter__(self):
        n = len(self.X)
        order = torch.randperm(n) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            idx_y = idx.to(self.y.device) if self.y is not None else None
            xb = self._gather(idx.to(self.X.device) if not self.pin else idx)
            yield xb, (self.y[idx_y] if self.y is not None else None)


@dataclass
class TrainResult:
    """What a training run leaves behind (copied into the estimator's fitted attributes)."""

    module: nn.Module
    n_iter: int
    loss_curve: list[float]
    validation_loss_curve: list[float] = field(default_factory=list)
    best_validation_loss: float | None = None


def _split(n: int, fraction: float, stratify: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    n_valid = max(1, int(round(fraction * n)))
    if n - n_valid < 1:
        raise ValueError(
            f"validation_fraction={fraction} leaves no training sample out of {n}; lower it or "
            "set early_stopping=False"
        )
    try:
        return train_test_split(idx, test_size=n_valid, random_state=seed, stratify=stratify)
    except ValueError:  # too few samples per class to stratify
        return train_test_split(idx, test_size=n_valid, random_state=seed)


def train_module(
    module: nn.Module,
    X: torch.Tensor,
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
) -> TrainResult:
    """Train ``module`` on ``(X, y)`` with AdamW, a per-batch cosine schedule and optional early stopping.

    ``no_decay`` lists parameter-name patterns (fnmatch) excluded from weight
    decay. Must be called inside a seeded RNG context: initialisation,
    shuffling and the validation split all derive from ``seed``.
    """
    train_idx = valid_idx = None
    if early_stopping:
        train_idx, valid_idx = _split(len(X), validation_fraction, stratify, seed)
        train_idx, valid_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(valid_idx))
    on_device = device.type != "cpu" and _fits_on_device(X, device)
    if on_device:
        X, y = X.to(device), y.to(device)
    else:
        y = y.to(device) if device.type != "cpu" else y
    X_train, y_train = (X, y) if train_idx is None else (X[train_idx.to(X.device)], y[train_idx.to(y.device)])
    n_batches = -(-len(X_train) // batch_size)

    callbacks: list = [
        ("cosine", LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                               T_max=max(1, max_iter * n_batches), step_every="batch")),
    ]
    train_split = None
    if early_stopping:
        valid = Dataset(X[valid_idx.to(X.device)], y[valid_idx.to(y.device)])
        train_split = predefined_split(valid)
        callbacks.append(("early_stopping", EarlyStopping(
            monitor="valid_loss", patience=n_iter_no_change, threshold=tol,
            threshold_mode="rel", lower_is_better=True, load_best=True, sink=_sink(verbose))))
    if verbose >= 2:
        callbacks.append(("progress", ProgressBar()))

    net = NeuralNet(
        module=module,
        criterion=criterion,
        optimizer=torch.optim.AdamW,
        optimizer__weight_decay=weight_decay,
        optimizer__param_groups=[(pattern, {"weight_decay": 0.0}) for pattern in no_decay],
        lr=learning_rate,
        max_epochs=max_iter,
        batch_size=batch_size,
        iterator_train=TensorBatchIterator,
        iterator_valid=TensorBatchIterator,
        iterator_train__shuffle=True,
        iterator_train__pin_memory=device.type == "cuda",
        iterator_valid__pin_memory=device.type == "cuda",
        train_split=train_split,
        callbacks=callbacks,
        device=device,
        verbose=verbose,
    )
    if verbose == 0:
        net.set_params(callbacks__print_log=None)
    net.fit(X_train, y_train)

    history = net.history
    loss_curve = [float(v) for v in history[:, "train_loss"]]
    result = TrainResult(module=net.module_, n_iter=len(history), loss_curve=loss_curve)
    if early_stopping:
        result.validation_loss_curve = [float(v) for v in history[:, "valid_loss"]]
        result.best_validation_loss = min(result.validation_loss_curve)
    return result


def _fits_on_device(X: torch.Tensor, device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return X.element_size() * X.nelement() < _ON_DEVICE_FRACTION * free


def _sink(verbose: int):
    return print if verbose else (lambda *args, **kwargs: None)


