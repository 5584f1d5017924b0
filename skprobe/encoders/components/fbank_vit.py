"""Shared skeleton of ViT-B/16 encoders on a normalised Kaldi fbank.

Audio-MAE, EAT and SSLAM all turn 16 kHz audio into a 1024 x 128 log-mel "image"
(:class:`~skprobe.encoders.components.frontends.NormalizedFbank`), cut it into 16 x 16
patches (64 along time, 8 along frequency, flattened time-major), put one
``[cls]`` token in front and run 12 transformer blocks. They differ in the
position embedding, the block type (pre- or post-norm) and the norms around the
blocks; subclasses fill in :meth:`FbankViT.embed_tokens` and
:meth:`FbankViT.layer_output`.

Layer ``i`` is the output of block ``i``. The last layer additionally goes
through whatever the official feature extraction applies after the blocks (a
final LayerNorm for Audio-MAE, nothing for EAT / SSLAM).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..base import AudioEncoder, TokenLayout
from ..formats.checkpoint import load_state_dict_strict, read_checkpoint
from .frontends import NormalizedFbank
from .vit import Block, PatchEmbed

__all__ = ["FbankViT", "checkpoint_state_dict", "check_layers"]

_PATCH = 16
_N_MELS = 128
_HOP_SECONDS = 0.01


def check_layers(layers: Sequence[int], n_layers: int) -> list[int]:
    """Validate layer indices: sorted, unique, in ``[0, n_layers)``.

    Raises
    ------
    ValueError
        Naming the offending ``layers`` value.
    """
    out = [int(i) for i in layers]
    if not out or out != sorted(set(out)) or out[0] < 0 or out[-1] >= n_layers:
        raise ValueError(
            f"layers must be a non-empty sorted list of unique indices in [0, {n_layers}), got {list(layers)}"
        )
    return out


def _flatten(state: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def checkpoint_state_dict(obj: Any, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model's tensors inside an Audio-MAE / fairseq (EAT, SSLAM) checkpoint.

    Descends through ``model`` / ``state_dict`` / ``module`` wrappers until it
    finds a mapping that holds tensors directly, then flattens nested mappings
    of tensors into dotted keys: fairseq's data2vec models store their EMA
    teacher as a nested dict under ``model["_ema"]``, which becomes
    ``_ema.<key>`` here (converters drop it). Entries that are not tensors
    (``None``, numbers) inside the state dict are dropped.

    Raises
    ------
    ValueError
        If no tensors are found; the message names ``source`` and the keys seen.
    """
    seen: list[str] = []
    while isinstance(obj, Mapping):
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            flat = _flatten(obj)
            return {k: v for k, v in flat.items() if isinstance(v, torch.Tensor)}
        seen.append(", ".join(map(str, list(obj)[:10])))
        for key in ("model", "state_dict", "module", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            break
    raise ValueError(
        f"{source} holds no state dict of tensors (keys seen: {' | '.join(seen) or type(obj).__name__})"
    )


class FbankViT(AudioEncoder):
    """ViT on a normalised 128-bin Kaldi fbank, one ``[cls]`` token, time-major patches.

    Parameters
    ----------
    depth : int
        Number of transformer blocks (12 for ViT-B); also the number of layers.
    dim : int
        Embedding dimension.
    num_heads : int
        Attention heads.
    norm_first : bool
        Pre-norm (timm) or post-norm (data2vec) blocks.
    target_frames : int
        Fbank frames after padding / cropping; a multiple of 16.
    norm_mean, norm_std : float
        Fbank normalisation constants of the official data loader.

    Attributes
    ----------
    frontend : NormalizedFbank
    patch_embed : PatchEmbed
    blocks : nn.ModuleList of Block
    """

    sample_rate = 16000
    #: Maps the official (unwrapped, flattened) state dict to this module's keys.
    convert_state_dict: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None

    def __init__(
        self,
        *,
        depth: int,
        dim: int,
        num_heads: int,
        norm_first: bool,
        target_frames: int,
        norm_mean: float,
        norm_std: float,
    ) -> None:
        super().__init__()
        if target_frames < _PATCH or target_frames % _PATCH:
            raise ValueError(f"target_frames must be a positive multiple of {_PATCH}, got {target_frames}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.n_layers = depth
        self.dim = dim
        self.target_frames = target_frames
        self.grid = (target_frames // _PATCH, _N_MELS // _PATCH)
        self.frontend = NormalizedFbank(target_frames=target_frames, norm_mean=norm_mean, norm_std=norm_std)
        self.patch_embed = PatchEmbed(_PATCH, 1, dim)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio=4.0, qkv_bias=True, norm_first=norm_first, eps=1e-6)
            for _ in range(depth)
        )
        # PyTorch's default initialisation (std ~0.02 for D = 768) keeps random
        # models well scaled; timm's trunc-normal init would triple build time.

    def embed_tokens(self, patches: torch.Tensor) -> torch.Tensor:
        """Patch embeddings ``(B, N, D)`` to the first block's input ``(B, 1 + N, D)``."""
        raise NotImplementedError

    def layer_output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Tokens reported for layer ``index`` given block ``index``'s output."""
        return x

    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """The normalised fbank ``(B, S) -> (B, target_frames, 128)`` fed to the patch embedding."""
        if wav.ndim != 2:
            raise ValueError(f"wav must be 2-D (batch, samples), got shape {tuple(wav.shape)}")
        return self.frontend(wav)

    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Token maps ``(B, 1 + T * F, D)`` of the requested layers, stopping after the deepest."""
        layers = check_layers(layers, self.n_layers)
        spec = self.spectrogram(wav)
        weight = self.patch_embed.proj.weight
        x = self.embed_tokens(self.patch_embed(spec.unsqueeze(1).to(weight.dtype)))
        wanted = set(layers)
        out = []
        for index, block in enumerate(self.blocks[: layers[-1] + 1]):
            x = block(x)
            if index in wanted:
                out.append(self.layer_output(x, index))
        return out

    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        """Layout of any layer: ``[cls]`` then a time-major ``(target_frames / 16) x 8`` grid.

        Every clip is padded or cropped to ``target_frames`` frames, so the grid
        does not depend on ``n_samples``.
        """
        check_layers([layer], self.n_layers)
        n_time, n_freq = self.grid
        return TokenLayout(1, n_time, n_freq, self.dim, _PATCH * _HOP_SECONDS, "time_freq")

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load an official checkpoint file (read safely, converted, matched strictly).

        Raises
        ------
        ValueError
            If the file is unreadable or its keys / shapes do not match; the
            message lists the mismatching keys.
        """
        state = checkpoint_state_dict(read_checkpoint(path), source=f"checkpoint {path}")
        if self.convert_state_dict is not None:
            state = self.convert_state_dict(state)
        load_state_dict_strict(self, state, source=f"checkpoint {path}")
