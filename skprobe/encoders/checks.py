"""Validate that a module keeps the :class:`~skprobe.encoders.AudioEncoder` contract."""

from __future__ import annotations

import torch

from .base import AudioEncoder, TokenLayout
from .loading import load_encoder
from .registry import EncoderSpec, get_encoder_spec

__all__ = ["check_encoder"]


def _fail(message: str) -> None:
    raise ValueError(f"encoder does not keep the AudioEncoder contract: {message}")


def check_encoder(
    encoder: AudioEncoder | EncoderSpec | str,
    *,
    checkpoint=None,
    clip_seconds: float = 1.0,
    atol: float = 1e-4,
    seed: int = 0,
) -> dict[int, TokenLayout]:
    """Run an encoder on random audio and check every promise of the contract.

    Checks that ``sample_rate`` and ``n_layers`` are set; that for every layer
    ``forward_layers`` returns one finite ``(B, N, D)`` tensor whose shape
    matches ``layout()`` for two clip lengths; that requesting all layers at
    once gives the same maps as one at a time; that a clip's tokens do not
    depend on the other clips of its batch; and that two forwards agree.

    Parameters
    ----------
    encoder : AudioEncoder, EncoderSpec or str
        A module, or a registered encoder (built and loaded with ``checkpoint``).
    checkpoint : path-like, optional
        Checkpoint for a registered encoder.
    clip_seconds : float, default=1.0
        Length of the test clips (a second length of ``1.5 * clip_seconds`` is also run).
    atol : float, default=1e-4
        Tolerance of the consistency checks.
    seed : int, default=0

    Returns
    -------
    dict
        ``{layer: TokenLayout}`` at ``clip_seconds``.

    Raises
    ------
    ValueError
        Naming the first broken promise.

    Examples
    --------
    >>> from skprobe.encoders.checks import check_encoder
    >>> from skprobe.encoders.models.tiny import TinyConvEncoder
    >>> layouts = check_encoder(TinyConvEncoder())
    >>> layouts[1].n_time, layouts[1].n_freq, layouts[1].dim
    (25, 8, 16)
    """
    if isinstance(encoder, (str, EncoderSpec)):
        spec = get_encoder_spec(encoder)
        encoder = load_encoder(spec, checkpoint)
    if not isinstance(encoder, torch.nn.Module) or not hasattr(encoder, "forward_layers"):
        _fail(f"expected an AudioEncoder module, got {type(encoder).__name__}")
    rate, n_layers = getattr(encoder, "sample_rate", None), getattr(encoder, "n_layers", None)
    if not isinstance(rate, int) or rate <= 0:
        _fail(f"sample_rate must be a positive int, got {rate!r}")
    if not isinstance(n_layers, int) or n_layers < 1:
        _fail(f"n_layers must be a positive int, got {n_layers!r}")
    encoder = encoder.eval()
    generator = torch.Generator().manual_seed(seed)
    layouts: dict[int, TokenLayout] = {}
    with torch.inference_mode():
        for seconds in (clip_seconds, 1.5 * clip_seconds):
            n = int(round(seconds * rate))
            wav = 0.1 * torch.randn(3, n, generator=generator)
            every = encoder.forward_layers(wav, list(range(n_layers)))
            if not isinstance(every, (list, tuple)) or len(every) != n_layers:
                _fail(f"forward_layers(all {n_layers} layers) must return {n_layers} tensors")
            for layer, tokens in enumerate(every):
                if not torch.isfinite(tokens).all():
                    _fail(f"layer {layer} returned NaN or infinite tokens")
            # Checked first: randomness would otherwise surface as a confusing mismatch below.
            again = encoder.forward_layers(wav, list(range(n_layers)))
            if not all(torch.allclose(a, b, atol=atol) for a, b in zip(again, every)):
                _fail("two forward passes in eval mode disagree (dropout or other randomness left on?)")
            for layer in range(n_layers):
                layout = encoder.layout(n, layer)
                if not isinstance(layout, TokenLayout):
                    _fail(f"layout({n}, {layer}) must return a TokenLayout")
                if layout.order not in ("time_freq", "freq_time") or layout.hop_seconds <= 0:
                    _fail(f"layer {layer}: invalid order {layout.order!r} or hop {layout.hop_seconds}")
                single = encoder.forward_layers(wav, [layer])
                if len(single) != 1:
                    _fail(f"forward_layers([{layer}]) returned {len(single)} tensors")
                tokens = single[0]
                expected = (3, layout.n_tokens, layout.dim)
                if tuple(tokens.shape) != expected:
                    _fail(f"layer {layer} at {seconds:g} s: tokens {tuple(tokens.shape)} but layout says {expected}")
                if not torch.isfinite(tokens).all():
                    _fail(f"layer {layer} returned NaN or infinite tokens")
                if not torch.allclose(tokens, every[layer], atol=atol):
                    _fail(f"layer {layer} differs when requested alone and with all layers")
                if seconds == clip_seconds:
                    layouts[layer] = layout
            alone = encoder.forward_layers(wav[:1], [n_layers - 1])[0]
            if not torch.allclose(alone, every[-1][:1], atol=atol):
                _fail("a clip's tokens change with the other clips in its batch")
    return layouts
