"""The contract every frozen audio encoder in skprobe implements.

An encoder is a :class:`torch.nn.Module` that maps a batch of mono waveforms at
its own sample rate to token maps, one per requested layer::

    wav (B, S) float32  ->  [tokens (B, P + T*F, D) for each requested layer]

``P`` leading *prefix* tokens (``[cls]``, distillation or register tokens) come
first, then the ``T * F`` patch tokens of a time x frequency grid, flattened in
the order named by :attr:`TokenLayout.order`. The forward stops after the
deepest requested layer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["AudioEncoder", "TokenLayout"]


@dataclass(frozen=True)
class TokenLayout:
    """Layout of the tokens one encoder layer produces for one clip length.

    Parameters
    ----------
    prefix_tokens : int
        Number of leading non-patch tokens (``[cls]`` and the like).
    n_time : int
        Patch tokens along time.
    n_freq : int
        Patch tokens along frequency (1 when the encoder pools frequency away).
    dim : int
        Embedding dimension ``D``.
    hop_seconds : float
        Time step between neighbouring patch tokens along time, in seconds.
    order : {"time_freq", "freq_time"}
        How the grid is flattened: ``"time_freq"`` means the patch token at time
        ``t`` and frequency ``f`` sits at ``prefix_tokens + t * n_freq + f``;
        ``"freq_time"`` means ``prefix_tokens + f * n_time + t``.
    """

    prefix_tokens: int
    n_time: int
    n_freq: int
    dim: int
    hop_seconds: float
    order: Literal["time_freq", "freq_time"] = "time_freq"

    @property
    def n_patches(self) -> int:
        """Number of patch tokens ``n_time * n_freq``."""
        return self.n_time * self.n_freq

    @property
    def n_tokens(self) -> int:
        """Total tokens per clip, prefix tokens included."""
        return self.prefix_tokens + self.n_patches

    def to_grid(self, tokens):
        """Reshape token maps ``(..., N, X)`` to ``(..., n_time, n_freq, X)``.

        Works on numpy arrays and torch tensors. Accepts either the full token
        map (``N == n_tokens``: the prefix tokens are dropped) or the patch
        tokens alone (``N == n_patches``), such as the output of
        :meth:`~skprobe.PrototypicalProbeClassifier.class_activation_maps`.

        Raises
        ------
        ValueError
            If ``N`` is neither ``n_tokens`` nor ``n_patches``.

        Examples
        --------
        >>> import numpy as np
        >>> layout = TokenLayout(prefix_tokens=1, n_time=3, n_freq=2, dim=4, hop_seconds=0.1)
        >>> layout.to_grid(np.zeros((5, 7, 4))).shape  # [cls] + 6 patches
        (5, 3, 2, 4)
        >>> layout.to_grid(np.zeros((5, 6, 10))).shape  # patch tokens only, e.g. 10 class maps
        (5, 3, 2, 10)
        """
        n = tokens.shape[-2]
        if n == self.n_tokens:
            patches = tokens[..., self.prefix_tokens :, :]
        elif n == self.n_patches:
            patches = tokens
        else:
            raise ValueError(
                f"tokens have {n} entries on axis -2 (shape {tuple(tokens.shape)}); this layout expects "
                f"{self.n_tokens} ({self.prefix_tokens} prefix + {self.n_patches} patch tokens) "
                f"or the {self.n_patches} patch tokens alone"
            )
        lead = tuple(patches.shape[:-2])
        last = patches.shape[-1]
        if self.order == "time_freq":
            return patches.reshape(*lead, self.n_time, self.n_freq, last)
        grid = patches.reshape(*lead, self.n_freq, self.n_time, last)
        return grid.swapaxes(-3, -2) if hasattr(grid, "swapaxes") else grid.transpose(-3, -2)


class AudioEncoder(nn.Module):
    """Base class of skprobe's frozen encoders.

    Subclasses set :attr:`sample_rate`, :attr:`n_layers` and implement
    :meth:`forward_layers` and :meth:`layout`. The module is used in eval mode
    under :func:`torch.inference_mode`; it never trains.

    Checkpoints load through :meth:`load_checkpoint`: the file is read safely,
    :meth:`unwrap_checkpoint` finds the state dict in it,
    :meth:`convert_state_dict` maps the official names to the module's, and
    the result must match the module exactly. Override the two hooks for an
    official torch checkpoint; override :meth:`load_checkpoint` itself for
    other formats (TensorFlow bundles, folders).

    Attributes
    ----------
    sample_rate : int
        Rate in Hz of the waveforms :meth:`forward_layers` expects.
    n_layers : int
        Number of selectable layers; valid indices are ``0 .. n_layers - 1``.
    layout_needs_weights : bool
        True when :attr:`n_layers` and :meth:`layout` are only known once the
        checkpoint is loaded (the architecture is read from it, as for
        transformers folders); :class:`~skprobe.FrozenEncoderTransformer`
        then loads the encoder in ``fit``.
    """

    sample_rate: int = 16000
    n_layers: int = 1
    layout_needs_weights: bool = False

    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Token maps of the requested layers.

        Parameters
        ----------
        wav : Tensor of shape (B, S)
            Mono float waveforms at :attr:`sample_rate`, values in about [-1, 1].
        layers : sequence of int
            Sorted, unique, non-negative layer indices below :attr:`n_layers`.
            The forward must stop after ``max(layers)``.

        Returns
        -------
        list of Tensor of shape (B, N_l, D_l)
            One token map per requested layer, in the order of ``layers``.
        """
        raise NotImplementedError

    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        """Token layout of ``layer`` for clips of ``n_samples`` samples."""
        raise NotImplementedError

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Tokens of the last layer, ``(B, N, D)``."""
        return self.forward_layers(wav, [self.n_layers - 1])[0]

    # -- checkpoints ---------------------------------------------------------
    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load a checkpoint file into this module, strictly.

        Reads ``path`` without running code from it
        (:func:`~skprobe.encoders.formats.checkpoint.read_checkpoint`), then
        ``convert_state_dict(unwrap_checkpoint(obj))`` must match the
        module's keys and shapes exactly.

        Raises
        ------
        ValueError
            If the file is unreadable, holds no state dict, or its keys or
            shapes do not match; the message names the file and lists the
            mismatching keys.
        """
        from .formats.checkpoint import load_state_dict_strict, read_checkpoint

        source = f"checkpoint {path}"
        obj = read_checkpoint(path)
        try:
            state = self.convert_state_dict(self.unwrap_checkpoint(obj))
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        load_state_dict_strict(self, state, source=source)

    def unwrap_checkpoint(self, obj: Any) -> dict[str, torch.Tensor]:
        """The state dict inside what was read from a checkpoint file.

        The default descends through ``model`` / ``state_dict`` / ``module``
        wrappers (:func:`~skprobe.encoders.formats.checkpoint.unwrap_state_dict`).
        Override to pick a network from a training snapshot or to check a
        stored config (raise ValueError to refuse the file).
        """
        from .formats.checkpoint import unwrap_state_dict

        return unwrap_state_dict(obj)

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map the official state dict's names to this module's (default: unchanged).

        Override to drop training-only heads or rename prefixes.
        """
        return state

    # -- description ---------------------------------------------------------
    def describe(self, n_samples: int) -> dict[str, Any]:
        """Architecture facts for clips of ``n_samples`` samples, from :meth:`layout`.

        Returns
        -------
        dict
            ``n_layers``; ``dim``, ``prefix_tokens`` and ``token_grid``
            ``(n_time, n_freq)`` of the last layer; ``n_heads``, the attention
            heads of the first submodule that has ``num_heads`` (None for CNNs).
            Works on a module built on the meta device.

        Examples
        --------
        >>> from skprobe.encoders.models.tiny import TinyTransformerEncoder
        >>> TinyTransformerEncoder().describe(16000)
        {'n_layers': 3, 'dim': 16, 'prefix_tokens': 1, 'token_grid': (24, 4), 'n_heads': 2}
        """
        last = self.layout(int(n_samples), self.n_layers - 1)
        heads = next((m.num_heads for m in self.modules() if isinstance(getattr(m, "num_heads", None), int)), None)
        return {
            "n_layers": int(self.n_layers),
            "dim": last.dim,
            "prefix_tokens": last.prefix_tokens,
            "token_grid": (last.n_time, last.n_freq),
            "n_heads": heads,
        }
