"""Probes: scikit-learn classifiers trained on frozen token maps."""

from ._config import (
    config_context,
    get_config,
    get_training_options,
    set_config,
    set_training_options,
    training_options,
)
from ._probe_file import ProbeFileError, load_probe, save_probe
from ._tokens import TokenView
from .attentive import AttentiveProbeClassifier
from .convex_gated import ConvexGatedProbeClassifier
from .linear import LinearProbeClassifier
from .losses import AsymmetricLoss
from .prototypical import PrototypicalProbeClassifier

__all__ = ["LinearProbeClassifier", "AttentiveProbeClassifier", "PrototypicalProbeClassifier",
           "ConvexGatedProbeClassifier", "AsymmetricLoss",
           "TokenView", "config_context", "get_config", "set_config", "get_training_options", "set_training_options",
           "training_options", "save_probe", "load_probe", "ProbeFileError"]
