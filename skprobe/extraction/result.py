"""What an extraction into the token store did: :class:`ExtractionResult`."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ExtractionResult"]


@dataclass
class ExtractionResult:
    """What :meth:`FrozenEncoderTransformer.extract_to_store` did.

    Attributes
    ----------
    keys : list of str or None
        Clip key of every input, in order (None for an input skipped as bad).
    computed : int
        Clips this call ran the encoder on (the others were stored already).
    skipped : list of (int, str, str)
        ``(index, name, message)`` of each bad input skipped with ``on_error="skip"``.
    """

    keys: list = field(default_factory=list)
    computed: int = 0
    skipped: list = field(default_factory=list)
