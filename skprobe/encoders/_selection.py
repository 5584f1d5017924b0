"""Validation of the layer indices passed to :meth:`AudioEncoder.forward_layers`."""

from __future__ import annotations

from typing import Sequence

__all__ = ["check_layers"]


def check_layers(layers: Sequence[int], n_layers: int) -> list[int]:
    """Return ``layers`` as a list after checking the encoder contract.

    Parameters
    ----------
    layers : sequence of int
        Requested layer indices: sorted, unique, in ``0 .. n_layers - 1``.
    n_layers : int
        Number of selectable layers of the encoder.

    Raises
    ------
    ValueError
        If ``layers`` is empty, unsorted, repeats an index or is out of range.

    Examples
    --------
    >>> check_layers([0, 11], 12)
    [0, 11]
    """
    out = [int(i) for i in layers]
    if not out:
        raise ValueError("layers must name at least one layer")
    if out != sorted(set(out)):
        raise ValueError(f"layers must be sorted and unique, got {out}")
    if out[0] < 0 or out[-1] >= n_layers:
        raise ValueError(f"layers must lie in 0..{n_layers - 1}, got {out}")
    return out
