"""What an extraction into the token store did: :class:`ExtractionResult`.

Examples
--------
>>> ExtractionResult(keys=["a", None], n_forwarded=1)
ExtractionResult(keys=['a', None], n_forwarded=1, skipped=[])
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

__all__ = ["ExtractionResult"]


@dataclass
class ExtractionResult:
    """What :meth:`FrozenEncoderTransformer.extract_to_store` did.

    Attributes
    ----------
    keys : list of str or None
        Clip key of every input, in order (None for an input skipped as bad).
    n_forwarded : int
        Clips this call ran the encoder on (the others were stored already);
        the name :class:`~skprobe.distributed.ExtractionReport` uses.
        ``computed`` is its deprecated alias.
    skipped : list of (int, str, str)
        ``(index, name, message)`` of each bad input skipped with ``on_error="skip"``.
    """

    keys: list = field(default_factory=list)
    n_forwarded: int = 0
    skipped: list = field(default_factory=list)

    @property
    def computed(self) -> int:
        """Deprecated alias of ``n_forwarded``."""
        warnings.warn("ExtractionResult.computed is deprecated: use n_forwarded", DeprecationWarning, stacklevel=2)
        return self.n_forwarded

    @computed.setter
    def computed(self, value: int) -> None:
        warnings.warn("ExtractionResult.computed is deprecated: use n_forwarded", DeprecationWarning, stacklevel=2)
        self.n_forwarded = value
