"""Imports every built-in architecture so that each registers its EncoderSpec."""

from .models import (
    aisfx,  # noqa: F401
    asit,  # noqa: F401
    audiomae,  # noqa: F401
    beats,  # noqa: F401
    crepe,  # noqa: F401
    dasheng,  # noqa: F401
    eat,  # noqa: F401
    hf,  # noqa: F401
    sslam,  # noqa: F401
    tiny,  # noqa: F401
    whisper,  # noqa: F401
    yamnet,  # noqa: F401
)
