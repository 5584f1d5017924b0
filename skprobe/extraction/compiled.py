"""The encoder's forward through ``torch.compile``, at one batch shape.

``FrozenEncoderTransformer(compile=True)`` runs every batch through a
compiled ``forward_layers``. The graph is built for one input shape,
``(batch_size, n_samples)``: a last, smaller batch is padded with silence to
that shape and its padding dropped from the tokens, so a run compiles once
(the first batch pays the compilation) instead of once per batch size.
Compiled callables are kept per encoder module, layers and batch size for
the life of the process, like the loaded encoders.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch

from ..encoders.base import AudioEncoder

__all__ = ["COMPILE_MODES", "compiled_forward"]

#: ``torch.compile`` modes ``FrozenEncoderTransformer(compile=...)`` accepts besides True/False.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

LayerForward = Callable[[torch.Tensor], list[torch.Tensor]]

# encoder module -> {(layers, batch_size, mode): compiled forward}; an encoder dropped from the encoder
# cache takes its compiled graphs with it
_COMPILED: weakref.WeakKeyDictionary[AudioEncoder, dict] = weakref.WeakKeyDictionary()


def compiled_forward(encoder: AudioEncoder, layers: Sequence[int], batch_size: int,
                     mode: str | bool | None = None) -> LayerForward:
    """``wav (B <= batch_size, S) -> token maps of layers``, through ``torch.compile(encoder.forward_layers)``.

    Parameters
    ----------
    encoder : AudioEncoder
    layers : sequence of int
        Sorted, unique, non-negative layer indices (``forward_layers``' argument).
    batch_size : int
        The one batch size the graph is compiled for; smaller batches are
        padded with zeros to it.
    mode : str or bool, optional
        ``torch.compile``'s ``mode``; None, True and ``"default"`` are its
        default (``FrozenEncoderTransformer``'s ``compile`` passes as it is).

    Returns
    -------
    callable
        Same contract as ``encoder.forward_layers(wav, layers)``.

    Examples
    --------
    >>> import torch
    >>> from skprobe.encoders import load_encoder
    >>> encoder = load_encoder("tiny-vit")
    >>> forward = compiled_forward(encoder, [0], batch_size=2)  # compiles on its first call
    >>> callable(forward)
    True
    """
    mode = None if mode in (True, "default") else mode
    per_encoder = _COMPILED.setdefault(encoder, {})
    key = (tuple(int(i) for i in layers), int(batch_size), mode)
    if key not in per_encoder:
        # the class's function, not the bound method: the cache's value must not keep its key alive
        compiled = torch.compile(type(encoder).forward_layers, dynamic=False, mode=mode)
        module = weakref.ref(encoder)
        layer_list = list(key[0])

        def forward(wav: torch.Tensor) -> list[torch.Tensor]:
            n = wav.shape[0]
            if n > batch_size:
                raise ValueError(f"a batch of {n} clips is larger than the compiled batch_size={batch_size}")
            if n < batch_size:
                # a tensor made under inference mode is another input kind to the compiled graph (a recompile)
                with torch.inference_mode(False):
                    wav = torch.cat([wav, wav.new_zeros((batch_size - n, *wav.shape[1:]))])
            maps = compiled(module(), wav, layer_list)
            return maps if n == batch_size else [m[:n] for m in maps]

        per_encoder[key] = forward
    return per_encoder[key]
