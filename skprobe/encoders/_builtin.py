"""Imports every built-in architecture so that each registers its EncoderSpec."""

from . import tiny  # noqa: F401
from . import audiomae, eat, sslam  # noqa: F401
