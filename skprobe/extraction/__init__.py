"""Token extraction: :class:`FrozenEncoderTransformer`, streaming, and the on-disk token store."""

from .cache import clip_key
from .store import StoreArray, StoreError, StoreWriter, TokenStore
from .transformer import ExtractionResult, FrozenEncoderTransformer, clear_encoder_cache, extract_to_store

__all__ = ["FrozenEncoderTransformer", "clear_encoder_cache", "extract_to_store", "ExtractionResult",
           "TokenStore", "StoreWriter", "StoreArray", "StoreError", "clip_key"]
