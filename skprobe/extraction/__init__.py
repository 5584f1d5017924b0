"""Token extraction: :class:`FrozenEncoderTransformer` and the on-disk token cache."""

from .cache import TokenCache, clip_key
from .transformer import FrozenEncoderTransformer, clear_encoder_cache

__all__ = ["FrozenEncoderTransformer", "clear_encoder_cache", "TokenCache", "clip_key"]
