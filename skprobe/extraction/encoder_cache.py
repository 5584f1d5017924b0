"""The encoders loaded in this process, shared by every :class:`FrozenEncoderTransformer`.

Weights never live on the estimator (clones and pickles stay light): they are
loaded on first use and kept here, keyed by the weights (encoder name,
builder, checkpoint path and file stats) and the device, at most
``MAX_LOADED`` at a time, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from ..encoders.base import AudioEncoder
from ..encoders.identity import checkpoint_fingerprint
from ..encoders.loading import load_encoder
from ..encoders.registry import EncoderSpec

__all__ = ["MAX_LOADED", "clear_encoder_cache", "loaded_encoder"]

MAX_LOADED = 2
_LOADED: OrderedDict[tuple, AudioEncoder] = OrderedDict()


def clear_encoder_cache() -> None:
    """Drop the encoders kept in memory by :class:`~skprobe.FrozenEncoderTransformer`.

    Examples
    --------
    >>> from skprobe.extraction import clear_encoder_cache
    >>> clear_encoder_cache()
    """
    _LOADED.clear()


class _Same:
    """A key part equal only to the same object, which it keeps alive.

    Keying on ``id(obj)`` alone would let a new builder that happens to get a
    freed builder's address find that builder's encoder.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj


def _device_key(device: torch.device) -> str:
    """One key per physical device: ``cuda`` and ``cuda:0`` name the same GPU."""
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def loaded_encoder(spec: EncoderSpec, path: Path | None, device: torch.device) -> AudioEncoder:
    """The encoder of ``spec`` with the weights at ``path`` on ``device``, loaded once per process.

    An encoder loaded on another device (e.g. on the CPU by ``fit``, for its
    layout) is moved, not read again.
    """
    stats = checkpoint_fingerprint(path) if path is not None else None
    weights = (spec.name, _Same(spec.builder), str(path), stats)
    key = (*weights, _device_key(device))
    module = _LOADED.get(key)
    if module is None:
        elsewhere = next((k for k in _LOADED if k[:-1] == weights), None)
        module = _LOADED.pop(elsewhere) if elsewhere is not None else load_encoder(spec, path)
        module = module.to(device)
        _LOADED[key] = module
        while len(_LOADED) > MAX_LOADED:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(key)
    return module
