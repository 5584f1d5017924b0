"""Layer selection: user-facing ``layers`` parameters and the encoder contract's index lists."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

__all__ = ["resolve_layers", "check_layers"]


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


def resolve_layers(layers: int | Sequence[int] | None, n_layers: int) -> list[int]:
    """timm-style layer selection: None = last, int or list, negatives count from the end.

    Returns sorted unique non-negative indices; raises ValueError when out of range.
    """
    requested = [-1] if layers is None else ([layers] if isinstance(layers, Integral) else list(layers))
    if not requested:
        raise ValueError("layers must not be empty")
    resolved = []
    for layer in requested:
        if not isinstance(layer, Integral) or not -n_layers <= layer < n_layers:
            raise ValueError(f"layers must be integers in [-{n_layers}, {n_layers - 1}] for this encoder, got {layer!r}")
        resolved.append(int(layer) % n_layers)
    return sorted(set(resolved))
