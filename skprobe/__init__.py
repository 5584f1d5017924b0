"""skprobe: scikit-learn probes for frozen audio encoders.

Linear, attentive and binarized prototypical probes ("Unmute the Patch Tokens",
Rauch et al.) as scikit-learn classifiers on token maps ``(n_clips, n_tokens, dim)``,
the convex gated probe of their follow-up (BAT) over several layers,
and a transformer that extracts those token maps from frozen pretrained audio
encoders.

The public names are imported on first use (PEP 562), so ``import skprobe`` is
cheap and loads neither torch nor any encoder until a name is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

# public name -> module that defines it
_LAZY = {
    "LinearProbeClassifier": "skprobe.probes.linear",
    "AttentiveProbeClassifier": "skprobe.probes.attentive",
    "PrototypicalProbeClassifier": "skprobe.probes.prototypical",
    "ConvexGatedProbeClassifier": "skprobe.probes.convex_gated",
    "save_probe": "skprobe.probes._probe_file",
    "load_probe": "skprobe.probes._probe_file",
    "FrozenEncoderTransformer": "skprobe.extraction.transformer",
    "AudioEncoder": "skprobe.encoders.base",
    "TokenLayout": "skprobe.encoders.base",
    "EncoderSpec": "skprobe.encoders.registry",
    "register_encoder": "skprobe.encoders.registry",
    "list_encoders": "skprobe.encoders.registry",
    "check_encoder": "skprobe.encoders.checks",
    "load_encoder": "skprobe.encoders.loading",
    "fetch_weights": "skprobe.encoders.weights",
    "detect_events": "skprobe.detection.detect",
    "frame_scores": "skprobe.detection.scorer",
}
_SUBMODULES = {"metrics", "probes", "encoders", "extraction", "datasets", "audio", "distributed", "detection"}

__all__ = [
    "__version__",
    "metrics",
    "LinearProbeClassifier",
    "AttentiveProbeClassifier",
    "PrototypicalProbeClassifier",
    "ConvexGatedProbeClassifier",
    "save_probe",
    "load_probe",
    "FrozenEncoderTransformer",
    "AudioEncoder",
    "TokenLayout",
    "EncoderSpec",
    "register_encoder",
    "list_encoders",
    "check_encoder",
    "load_encoder",
    "fetch_weights",
    "detect_events",
    "frame_scores",
]

if TYPE_CHECKING:  # pragma: no cover
    from . import metrics
    from .detection.detect import detect_events
    from .detection.scorer import frame_scores
    from .encoders.base import AudioEncoder, TokenLayout
    from .encoders.checks import check_encoder
    from .encoders.loading import load_encoder
    from .encoders.registry import EncoderSpec, list_encoders, register_encoder
    from .encoders.weights import fetch_weights
    from .extraction.transformer import FrozenEncoderTransformer
    from .probes._probe_file import load_probe, save_probe
    from .probes.attentive import AttentiveProbeClassifier
    from .probes.convex_gated import ConvexGatedProbeClassifier
    from .probes.linear import LinearProbeClassifier
    from .probes.prototypical import PrototypicalProbeClassifier


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
