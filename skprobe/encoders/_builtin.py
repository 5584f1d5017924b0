"""Imports every built-in architecture so that each registers its EncoderSpec."""

from . import tiny  # noqa: F401
from . import aisfx  # noqa: F401
from . import crepe  # noqa: F401
from . import hf  # noqa: F401
