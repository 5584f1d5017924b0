"""Token extraction: :class:`FrozenEncoderTransformer`, streaming, and the on-disk token store.

Names are imported on first use (PEP 562): the token store (``skprobe.extraction.store``)
needs only numpy, so a process that only reads a store never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_LAZY = {
    "FrozenEncoderTransformer": "skprobe.extraction.transformer",
    "clear_encoder_cache": "skprobe.extraction.encoder_cache",
    "extract_to_store": "skprobe.extraction.writing",
    "ExtractionResult": "skprobe.extraction.result",
    "TokenStore": "skprobe.extraction.store",
    "StoreWriter": "skprobe.extraction.store",
    "StoreArray": "skprobe.extraction.store",
    "StoreError": "skprobe.extraction.store",
    "StoreDescription": "skprobe.extraction.store",
    "clip_key": "skprobe.extraction.keys",
}

__all__ = ["FrozenEncoderTransformer", "clear_encoder_cache", "extract_to_store", "ExtractionResult",
           "TokenStore", "StoreWriter", "StoreArray", "StoreError", "StoreDescription", "clip_key"]

if TYPE_CHECKING:  # pragma: no cover
    from .encoder_cache import clear_encoder_cache
    from .keys import clip_key
    from .result import ExtractionResult
    from .store import StoreArray, StoreDescription, StoreError, StoreWriter, TokenStore
    from .transformer import FrozenEncoderTransformer
    from .writing import extract_to_store


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
