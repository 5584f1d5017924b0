"""Probes: scikit-learn classifiers trained on frozen token maps."""

from .attentive import AttentiveProbeClassifier
from .linear import LinearProbeClassifier
from .losses import AsymmetricLoss
from .prototypical import PrototypicalProbeClassifier

__all__ = ["LinearProbeClassifier", "AttentiveProbeClassifier", "PrototypicalProbeClassifier", "AsymmetricLoss"]
