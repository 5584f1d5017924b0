"""Layer selection shared by every architecture.

- :func:`resolve_layers`: the user-facing ``layers`` parameter (None = last,
  an int or a list, negatives count from the end; a list comes back in
  increasing layer order without repeats, as timm's ``forward_intermediates``
  returns its ``indices``, with a warning when that changes the list);
- :func:`check_layers`: the index lists of the encoder contract
  (:meth:`~skprobe.encoders.AudioEncoder.forward_layers`: sorted, unique,
  non-negative); both raise the same message for an index out of range;
- :func:`run_blocks`: the stop-early block loop that collects the requested layers;
- :func:`conv_tokens`: a CNN feature map as time-major tokens.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Any

__all__ = ["resolve_layers", "check_layers", "run_blocks", "conv_tokens"]


def _out_of_range(layer: object, n_layers: int, *, negative: bool) -> ValueError:
    low = -n_layers if negative else 0
    return ValueError(f"layers must be integers in [{low}, {n_layers - 1}] for this encoder, got {layer!r}")


def _indices(layers: Sequence[int], n_layers: int, *, negative: bool) -> list[int]:
    low = -n_layers if negative else 0
    out = []
    for layer in layers:
        if not isinstance(layer, Integral) or not low <= layer < n_layers:
            raise _out_of_range(layer, n_layers, negative=negative)
        out.append(int(layer) % n_layers)
    if not out:
        raise ValueError("layers must not be empty")
    return out


def resolve_layers(layers: int | Sequence[int] | None, n_layers: int) -> list[int]:
    """Layer selection to non-negative indices in increasing layer order, each once.

    The order is the encoder's, not the request's, as in timm (whose
    ``forward_intermediates`` takes its ``indices`` as a set and returns the
    layers in the order the blocks run): ``layers=[11, 3]`` gives ``[3, 11]``,
    so a 4-D token array holds layer 3 first. A list that this reorders or
    shortens (a layer named twice, e.g. ``-1`` and ``11`` of 12) draws a
    ``UserWarning`` saying so.

    Parameters
    ----------
    layers : None, int or sequence of int
        None selects the last layer; an int one layer; a sequence several.
        Negative indices count from the end (``-1`` is the last layer).
    n_layers : int
        Number of selectable layers of the encoder.

    Returns
    -------
    list of int

    Raises
    ------
    ValueError
        If ``layers`` is empty or an index is not an integer in ``[-n_layers, n_layers - 1]``.

    Examples
    --------
    >>> resolve_layers([0, -1], 12)
    [0, 11]
    >>> resolve_layers(None, 12)
    [11]
    """
    requested = [-1] if layers is None else ([layers] if isinstance(layers, Integral) else list(layers))
    given = _indices(requested, n_layers, negative=True)
    out = sorted(set(given))
    if out != given:
        warnings.warn(f"layers={list(requested)!r} selects layers {out} in increasing order (each once), as timm "
                      f"does: the layer axis of the tokens follows {out}, not the order given", UserWarning,
                      stacklevel=3)
    return out


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
    out = _indices(list(layers), n_layers, negative=False)
    if out != sorted(set(out)):
        raise ValueError(f"layers must be sorted and unique, got {out}")
    return out


def run_blocks(
    x: Any,
    blocks: Sequence[Callable[[Any], Any]],
    layers: Sequence[int],
    output: Callable[[Any, int], Any] | None = None,
) -> list:
    """Run ``x`` through ``blocks`` in turn and collect the requested layers, stopping early.

    Parameters
    ----------
    x : Tensor
        Input of the first block.
    blocks : sequence of callables
        ``block(x) -> x``; layer ``i`` is the output of ``blocks[i]``.
    layers : sequence of int
        Valid indices (see :func:`check_layers`); no block after ``max(layers)`` runs.
    output : callable, optional
        ``output(x, i)`` turns block ``i``'s output into the reported tokens
        (e.g. a final norm or a reshape); by default the output itself.

    Returns
    -------
    list
        One entry per requested layer, in increasing layer order.

    Examples
    --------
    >>> run_blocks(1, [lambda x: x + 1, lambda x: 10 * x, lambda x: x - 3], [0, 1])
    [2, 20]
    """
    wanted = set(layers)
    out = []
    for index, block in enumerate(blocks[: max(wanted) + 1]):
        x = block(x)
        if index in wanted:
            out.append(x if output is None else output(x, index))
    return out


def conv_tokens(x: Any, index: int | None = None) -> Any:
    """A CNN feature map ``(B, C, T, F)`` as time-major tokens ``(B, T * F, C)``.

    ``index`` is ignored; it lets the function serve as ``output`` of :func:`run_blocks`.

    Examples
    --------
    >>> import torch
    >>> conv_tokens(torch.zeros(2, 16, 5, 3)).shape
    torch.Size([2, 15, 16])
    """
    return x.permute(0, 2, 3, 1).flatten(1, 2)
