"""Frozen audio encoders: the registry, the built-in architectures and the transformer."""

from .base import AudioEncoder, TokenLayout
from .checks import check_encoder
from .loading import load_encoder
from .transformer import FrozenEncoderTransformer, clear_encoder_cache, resolve_layers
from .registry import EncoderSpec, PackagedWeights, get_encoder_spec, list_encoders, register_encoder
from .weights import fetch_weights, find_weights

__all__ = [
    "check_encoder",
    "FrozenEncoderTransformer",
    "clear_encoder_cache",
    "resolve_layers",
    "AudioEncoder",
    "TokenLayout",
    "EncoderSpec",
    "PackagedWeights",
    "register_encoder",
    "get_encoder_spec",
    "list_encoders",
    "load_encoder",
    "fetch_weights",
    "find_weights",
]
