"""skprobe: scikit-learn probes for frozen audio encoders.

Linear, attentive and binarized prototypical probes ("Unmute the Patch Tokens",
Rauch et al.) as scikit-learn classifiers on token maps ``(n_clips, n_tokens, dim)``,
and a transformer that extracts those token maps from frozen pretrained audio
encoders.
"""

from ._version import __version__
from .encoders import (
    AudioEncoder,
    EncoderSpec,
    FrozenEncoderTransformer,
    TokenLayout,
    check_encoder,
    fetch_weights,
    list_encoders,
    load_encoder,
    register_encoder,
)
from . import metrics
from .probes import AttentiveProbeClassifier, LinearProbeClassifier, PrototypicalProbeClassifier

__all__ = [
    "__version__",
    "metrics",
    "LinearProbeClassifier",
    "AttentiveProbeClassifier",
    "PrototypicalProbeClassifier",
    "FrozenEncoderTransformer",
    "AudioEncoder",
    "EncoderSpec",
    "TokenLayout",
    "register_encoder",
    "check_encoder",
    "list_encoders",
    "load_encoder",
    "fetch_weights",
]
