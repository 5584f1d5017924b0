"""Training losses of the probes: asymmetric loss, binary and categorical cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


#: A logit beyond this magnitude on the wrong side of its target is saturated: the sigmoid is
#: within 3e-7 of 0 or 1, and the ASL's ``clamp(min=1e-8)`` gives no gradient from about 18.4 on.
SATURATION_LOGIT = 15.0
#: Share of confidently wrong training outputs above which a fit is reported as saturated.
SATURATION_SHARE = 0.05


def saturated_share(logits: torch.Tensor, targets: torch.Tensor, loss: str) -> float:
    """Share of outputs that are confidently wrong (past :data:`SATURATION_LOGIT`).

    Sigmoid losses: the share of (clip, class) logits beyond ``±15`` on the wrong
    side of their 0/1 target. ``"ce"``: the share of clips whose true class
    has a log-probability below ``-15``.

    >>> import torch
    >>> saturated_share(torch.tensor([[-30.0, -30.0]]), torch.tensor([[1.0, 0.0]]), "bce")
    0.5
    """
    logits = logits.double()
    if loss == "ce":
        log_p = torch.log_softmax(logits, dim=1).gather(1, targets.long().view(-1, 1))
        return float((log_p < -SATURATION_LOGIT).double().mean())
    targets = targets.to(logits.dtype)
    wrong = ((logits > SATURATION_LOGIT) & (targets < 0.5)) | ((logits < -SATURATION_LOGIT) & (targets > 0.5))
    return float(wrong.double().mean())


def check_training(estimator, module: nn.Module, tokens: torch.Tensor, targets: torch.Tensor, loss: str,
                   loss_curve: list[float], n_check: int = 512) -> None:
    """Fail on a non-finite training loss; warn when the fitted network is saturated.

    A diverged or collapsed fit must not pass silently: a NaN or infinite loss
    raises ``ValueError``; more than :data:`SATURATION_SHARE` confidently wrong
    outputs on (up to ``n_check``) training clips raise a
    :class:`~sklearn.exceptions.ConvergenceWarning` that names the probe and
    what to change.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    name = type(estimator).__name__
    advice = f"lower learning_rate (now {getattr(estimator, 'learning_rate_', estimator.learning_rate):g})"
    if getattr(estimator, "normalize_tokens_", estimator.normalize_tokens) == "none":
        advice += " or use normalize_tokens='center' (now 'none': raw tokens)"
    bad = [i for i, v in enumerate(loss_curve) if not torch.isfinite(torch.tensor(v))]
    if bad:
        raise ValueError(f"{name}: the training loss became {loss_curve[bad[0]]} in epoch {bad[0] + 1} "
                         f"(diverged); {advice}")
    idx = torch.linspace(0, len(tokens) - 1, min(n_check, len(tokens))).long()
    with torch.inference_mode():
        logits = torch.cat([module(tokens[idx[i : i + 64]]) for i in range(0, len(idx), 64)])
    share = saturated_share(logits, targets[idx], loss)
    if share > SATURATION_SHARE:
        warnings.warn(
            f"{name}: {share:.0%} of the training outputs are saturated on the wrong side (|logit| > "
            f"{SATURATION_LOGIT:g}; final training loss {loss_curve[-1]:.4g}): the fit collapsed and its "
            f"probabilities carry little ranking information; {advice}",
            ConvergenceWarning, stacklevel=3,
        )
