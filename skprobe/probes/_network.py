"""The network every probe trains: token normalisation with training-set statistics around a head.

:class:`ProbeNetwork` casts tokens to float32, normalises them with statistics
fixed before training (:func:`raw_moments`, :func:`normalisation_stats`) and
splits the prefix tokens from the patch tokens for the head.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ._auto import AUTO_CENTER_OFFSET_RATIO, direction_coherence, offset_ratio

__all__ = ["NORMALIZATIONS", "ProbeNetwork", "TokenMoments", "feature_moments", "normalisation_stats", "raw_moments"]

#: Input normalisations of the probes (``normalize_tokens``).
NORMALIZATIONS = ("center", "standard", "scale", "none")


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
    tokens. A head with ``ignores_token_scale = True`` (cosine similarity:
    the prototype heads) skips the global scale of ``"scale"`` and
    ``"center"``, which cannot change its output. A head with
    ``normalizes_features = True`` (the linear probe)
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
            # a head that sees token directions only (cosine similarity) needs no global scale: skip that pass
            global_scale_only = self.normalize in ("scale", "center") and getattr(self.head, "ignores_token_scale",
                                                                                 False)
            if self.normalize == "scale":  # no shift: one multiplication
                tokens = tokens if global_scale_only else tokens * (1.0 / self.token_scale)
            else:  # the difference is a fresh tensor: divide in place
                tokens = torch.sub(tokens, self.token_mean)
                if not global_scale_only:
                    tokens.div_(self.token_scale)
        return tokens[:, : self.prefix_tokens], tokens[:, self.prefix_tokens :]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(*self.split(tokens))

