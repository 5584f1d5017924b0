"""Deprecated module: :func:`clip_key` lives in :mod:`skprobe.extraction.keys` (also ``skprobe.extraction.clip_key``)."""

from __future__ import annotations

import warnings

__all__ = ["clip_key"]  # noqa: F822 (module __getattr__)


def __getattr__(name: str):
    if name == "clip_key":
        warnings.warn("skprobe.extraction.cache is deprecated: import clip_key from skprobe.extraction",
                      DeprecationWarning, stacklevel=2)
        from .keys import clip_key

        return clip_key
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
