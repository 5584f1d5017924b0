"""Probes: scikit-learn classifiers trained on frozen token maps."""

from ._probe_file import ProbeFileError, load_probe, save_probe
from ._tokens import TokenView
from ._training import get_training_options, set_training_options, training_options
from .attentive import AttentiveProbeClassifier
from .convex_gated import ConvexGatedProbeClassifier
from .linear import LinearProbeClassifier
from .losses import AsymmetricLoss
from .prototypical import PrototypicalProbeClassifier

__all__ = ["LinearProbeClassifier", "AttentiveProbeClassifier", "PrototypicalProbeClassifier",
           "ConvexGatedProbeClassifier", "AsymmetricLoss",
           "TokenView", "get_training_options", "set_training_options", "training_options", "save_probe", "load_probe",
           "ProbeFileError"]
