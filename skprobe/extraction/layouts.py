"""Token layouts of the requested layers at a clip length, or an error giving the shortest usable clip."""

from __future__ import annotations

from ..encoders.base import AudioEncoder, TokenLayout
from ..encoders.registry import EncoderSpec

__all__ = ["layer_layouts"]


def layer_layouts(spec: EncoderSpec, skeleton: AudioEncoder, layers: list[int], n_samples: int,
                  clip_seconds: float) -> list[TokenLayout]:
    """Layouts of ``layers`` for clips of ``n_samples``, or a ValueError naming the minimum clip length.

    Examples
    --------
    >>> from skprobe.encoders.registry import get_encoder_spec, skeleton
    >>> spec = get_encoder_spec("tiny-vit")
    >>> [lay.n_tokens for lay in layer_layouts(spec, skeleton(spec), [0, 1], 16000, 1.0)]
    [97, 97]
    """
    def usable(n: int) -> bool:
        try:
            return all(skeleton.layout(n, layer).n_time >= 1 for layer in layers)
        except (ValueError, RuntimeError):
            return False

    if not usable(n_samples):
        hi = max(n_samples, 1)
        while not usable(hi) and hi < 1 << 26:
            hi *= 2
        if not usable(hi):  # no longer clip works either (e.g. a maximum length): the layout says why
            try:
                [skeleton.layout(n_samples, layer) for layer in layers]
            except (ValueError, RuntimeError) as exc:
                raise ValueError(f"clip_seconds={clip_seconds:g} ({n_samples} samples at {skeleton.sample_rate} "
                                 f"Hz) does not suit encoder {spec.name!r}: {exc}") from None
        lo = n_samples
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if usable(mid) else (mid, hi)
        raise ValueError(
            f"clip_seconds={clip_seconds:g} ({n_samples} samples at {skeleton.sample_rate} Hz) is too short "
            f"for encoder {spec.name!r}: its token map would be empty; the minimum is "
            f"{hi / skeleton.sample_rate:.4g} s ({hi} samples)"
        )
    return [skeleton.layout(n_samples, layer) for layer in layers]
