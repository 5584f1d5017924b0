"""Training losses of the probes: asymmetric loss, binary and categorical cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._diagnostics import SATURATION_LOGIT, SATURATION_SHARE, check_training, saturated_share  # noqa: F401 (also here)

__all__ = ["AsymmetricLoss", "make_loss", "LOSSES"]

LOSSES = ("asl", "bce", "ce")


class AsymmetricLoss(nn.Module):
    """Asymmetric loss for multi-label classification (Ridnik et al., ICCV 2021).

    With ``p = sigmoid(logit)`` and the shifted negative probability
    ``p_m = max(p - clip, 0)``, the per-element loss is::

        L+ = -(1 - p) ** gamma_pos * log(p)          for positive targets
        L- = -p_m ** gamma_neg * log(1 - p_m)       for negative targets

    summed over classes and averaged over the batch. ``(0, 0, 0)`` is plain
    binary cross-entropy (summed over classes).

    Parameters
    ----------
    gamma_neg : float, default=4.0
        Focusing exponent of negatives.
    gamma_pos : float, default=1.0
        Focusing exponent of positives.
    clip : float, default=0.05
        Probability margin under which negatives are discarded.
    eps : float, default=1e-8
        Floor inside the logarithms.

    Examples
    --------
    >>> import torch
    >>> loss = AsymmetricLoss(0.0, 0.0, 0.0)
    >>> logits, y = torch.zeros(2, 3), torch.tensor([[1., 0., 0.], [0., 1., 1.]])
    >>> round(float(loss(logits, y)), 4)  # 3 classes x log(2)
    2.0794
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 1.0, clip: float = 0.05, eps: float = 1e-8) -> None:
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.to(logits.dtype)
        p = torch.sigmoid(logits)
        p_neg = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        log_pos = torch.log(p.clamp(min=self.eps))
        log_neg = torch.log((1 - p_neg).clamp(min=self.eps))
        loss_pos = targets * log_pos
        loss_neg = (1 - targets) * log_neg
        if self.gamma_pos > 0 or self.gamma_neg > 0:
            # The focusing weights are constants for the gradient, as in the reference implementation.
            with torch.no_grad():
                w_pos = (1 - p).pow(self.gamma_pos)
                w_neg = p_neg.pow(self.gamma_neg)
            loss_pos = loss_pos * w_pos
            loss_neg = loss_neg * w_neg
        return -(loss_pos + loss_neg).sum(dim=1).mean()


class _SummedBCE(nn.Module):
    """Binary cross-entropy summed over classes, averaged over the batch."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
        return loss.sum(dim=1).mean()


def make_loss(name: str, *, gamma_neg: float, gamma_pos: float, clip: float) -> nn.Module:
    """The loss module for a resolved loss name (``"asl"``, ``"bce"`` or ``"ce"``)."""
    if name == "asl":
        return AsymmetricLoss(gamma_neg, gamma_pos, clip)
    if name == "bce":
        return _SummedBCE()
    if name == "ce":
        return nn.CrossEntropyLoss()
    raise ValueError(f"loss must be one of {('auto',) + LOSSES}, got {name!r}")
