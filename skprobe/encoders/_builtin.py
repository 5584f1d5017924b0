"""Imports every built-in architecture so that each registers its EncoderSpec."""

from . import aisfx  # noqa: F401
from . import asit  # noqa: F401
from . import audiomae  # noqa: F401
from . import beats  # noqa: F401
from . import crepe  # noqa: F401
from . import dasheng  # noqa: F401
from . import eat  # noqa: F401
from . import hf  # noqa: F401
from . import sslam  # noqa: F401
from . import tiny  # noqa: F401
from . import yamnet  # noqa: F401
