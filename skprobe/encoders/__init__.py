"""Frozen audio encoders: the contract, the registry, loading and checks.

Where things live:

- ``base.py``: the :class:`AudioEncoder` contract and :class:`TokenLayout`;
- ``registry.py``, ``loading.py``, ``checks.py``, ``weights.py``: naming,
  building, loading, validating encoders and fetching packaged weights;
- ``layers.py``: layer selection shared by every architecture;
- ``identity.py``: what identifies an encoder's weights (:func:`weights_id`);
- ``models/``: one module per architecture family, each registering its variants;
- ``components/``: building blocks shared by architectures (front ends, ViT blocks);
- ``formats/``: reading checkpoint files safely (torch pickles, TensorFlow bundles,
  CTranslate2 model files).

The scikit-learn transformer that runs an encoder over clips lives in
:mod:`skprobe.extraction`.
"""

from .base import AudioEncoder, TokenLayout
from .checks import check_encoder
from .identity import weights_id
from .layers import resolve_layers
from .loading import load_encoder
from .registry import EncoderSpec, PackagedWeights, get_encoder_spec, list_encoders, register_encoder
from .weights import fetch_weights, find_weights

__all__ = [
    "check_encoder",
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
    "weights_id",
]


def __getattr__(name: str):
    if name in {"FrozenEncoderTransformer", "clear_encoder_cache"}:
        # Deprecated alias of the transformer's home before 0.1; the one import of extraction from encoders,
        # allowed by name in tests/test_architecture.py (DEPRECATED_EDGES) until the alias goes.
        import warnings

        from ..extraction import transformer

        warnings.warn(f"skprobe.encoders.{name} is deprecated and will be removed: use "
                      f"`from skprobe.extraction import {name}`", DeprecationWarning, stacklevel=2)
        return getattr(transformer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
