"""Checks on a finished ``fit``: a diverged loss raises, a saturated network warns.

:func:`check_training` runs after every probe's training, on (up to 512 of)
the clips the network trained on.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SATURATION_LOGIT", "SATURATION_SHARE", "check_training", "saturated_share"]

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
