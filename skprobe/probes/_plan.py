"""The frozen training plan: every setting one ``fit`` trains with, resolved once.

``fit`` builds one :class:`TrainingPlan` from the estimator's parameters
(``"auto"`` resolved) and the process-wide options of
:func:`~skprobe.probes.config_context`, and hands it to the training engine
(:func:`~skprobe.probes._training.train_module`) whole, instead of relaying
each setting as a keyword argument. Changing the options during a ``fit``
does not change that ``fit``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ._config import get_config

__all__ = ["TrainingPlan", "make_plan"]


@dataclass(frozen=True)
class TrainingPlan:
    """What one ``fit`` trains with (frozen: derive a variant with :func:`dataclasses.replace`).

    Attributes
    ----------
    device : torch.device
        Where the network trains.
    autocast_dtype : torch.dtype or None
        Dtype of the forward pass under autocast during training (bfloat16 on
        CUDA unless switched off), None for float32.
    batch_size : int
        Clips per optimisation step.
    memory_budget : float, int or None
        Residency: GPU memory the training tokens may occupy to stay on the
        device (a share of the free memory, bytes, or None for the default).
    prefetch : int
        Residency: batches the streaming thread reads ahead when tokens stay on the host.
    learning_rate, weight_decay : float
        Schedule: AdamW's peak rate (cosine decay per batch) and weight decay.
    no_decay : tuple of str
        Parameter-name patterns (fnmatch) without weight decay.
    max_iter : int
        Schedule: epochs.
    early_stopping : bool
    validation_fraction : float
    n_iter_no_change : int
    tol : float
        Schedule: the early-stopping rule (see the probes' parameters).
    seed : int
        Seed of the validation split (initialisation and shuffling draw from
        the torch generator ``fit`` seeds with it).
    verbose : int
    """

    device: torch.device
    autocast_dtype: torch.dtype | None
    batch_size: int
    memory_budget: float | int | None
    prefetch: int
    learning_rate: float
    weight_decay: float
    no_decay: tuple[str, ...]
    max_iter: int
    early_stopping: bool = False
    validation_fraction: float = 0.1
    n_iter_no_change: int = 5
    tol: float = 1e-4
    seed: int = 0
    verbose: int = 0

    def with_schedule(self, *, learning_rate: float, max_iter: int) -> TrainingPlan:
        """The same plan with another learning rate and length (a probe's own choice of them)."""
        return replace(self, learning_rate=float(learning_rate), max_iter=int(max_iter))


def make_plan(device: torch.device, *, batch_size: int, learning_rate: float, weight_decay: float,
              max_iter: int, no_decay: tuple[str, ...] = (), **schedule) -> TrainingPlan:
    """A :class:`TrainingPlan` with the process-wide options read now (:func:`~skprobe.probes.get_config`).

    ``schedule`` takes the remaining fields (``early_stopping``, ``seed``, ...).

    >>> import torch
    >>> plan = make_plan(torch.device("cpu"), batch_size=32, learning_rate=1e-3, weight_decay=0.0, max_iter=30)
    >>> plan.autocast_dtype is None, plan.with_schedule(learning_rate=0.1, max_iter=5).max_iter
    (True, 5)
    """
    options = get_config()
    autocast = torch.bfloat16 if options.autocast_bf16 and device.type == "cuda" else None
    return TrainingPlan(device=device, autocast_dtype=autocast, batch_size=int(batch_size),
                        memory_budget=options.device_memory_budget, prefetch=options.prefetch,
                        learning_rate=float(learning_rate), weight_decay=float(weight_decay),
                        no_decay=tuple(no_decay), max_iter=int(max_iter), **schedule)
