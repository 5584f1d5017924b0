"""Package-wide locations and defaults."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_home"]


def data_home() -> Path:
    """Root of skprobe's caches: ``$SKPROBE_HOME`` or ``~/.cache/skprobe``.

    Weights are extracted to ``<home>/weights``, data sets to ``<home>/data``.
    """
    home = os.environ.get("SKPROBE_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "skprobe"
