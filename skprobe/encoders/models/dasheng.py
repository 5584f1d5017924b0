"""Dasheng (Dinkel et al., Interspeech 2024) as a frozen skprobe encoder.

Mirrors the official release of Xiaomi's ``dasheng`` (GitHub ``XiaoMi/dasheng``,
PyPI ``dasheng`` 0.0.9, ``dasheng/pretrained/pretrained.py`` and
``dasheng/train/models.py``) for the base model, whose checkpoint
``dasheng_base.pt`` (Zenodo record 11511780) is ``{'model': state_dict,
'config': {...}}``; the state dict loads under its own names.

What the official ``Dasheng.forward`` computes, and this module too:

* Front end: the raw waveform (no scaling) through torchaudio's
  ``MelSpectrogram`` (16 kHz, n_fft = win = 512 periodic Hann, hop 160,
  ``center=True`` with reflect padding, 64 HTK mel bands 0-8 kHz, power 2),
  then decibels ``10 log10(max(x, 1e-10))`` floored at 120 dB below the
  maximum, then a ``BatchNorm2d`` over the 64 mel bands (running statistics).
  A 10 s clip gives 1001 frames. The 120 dB floor is taken per clip here;
  torchaudio's ``AmplitudeToDB`` on a ``(B, 64, T)`` batch takes it over the
  whole batch, so the official model matches this only for batches of one.
* Patches: ``Conv2d`` with kernel = stride = (64 mel, 4 frames): every patch
  spans all 64 bands, so the token grid is **time only** (``n_freq = 1``),
  one token per 40 ms: 250 tokens for 10 s, and 768-d. This differs from the
  ViT-B convention of 16 x 16 patches (8 x 64 = 512 tokens).
* Chunking: the patch sequence is cut into chunks of 252 patches (the 1008
  training frames); every chunk gets the time embedding from position 0 plus
  the (single) frequency embedding and goes through the transformer on its
  own; the token maps are concatenated. The last chunk is shorter, not padded.
  No [cls] token (the released base model pools by mean).
* Blocks: 12 pre-norm ViT blocks (timm names, LayerNorm eps 1e-6), final
  ``norm``. Layer ``i < 11`` of :meth:`DashengEncoder.forward_layers` is the
  raw output of block ``i``; the last layer includes the final norm and equals
  the official output.

Older releases of the package (< 0.0.9) chunked 1008 frames of the
spectrogram instead and zero-padded the last chunk to full length before
trimming its tokens; that changes the tokens of the last chunk of clips
longer than 10.08 s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torchaudio
from torch import nn

from ..base import AudioEncoder, TokenLayout
from ..components.frontends import computed_buffers
from ..components.vit import Block, PatchEmbed
from ..layers import check_layers, run_blocks
from ..registry import EncoderSpec, register_builtin

__all__ = ["DashengEncoder", "convert_dasheng_state_dict"]


class _ClipDecibels(nn.Module):
    """Power to dB, floored ``top_db`` below each clip's maximum: ``(B, F, T) -> (B, F, T)``."""

    def __init__(self, top_db: float = 120.0, amin: float = 1e-10) -> None:
        super().__init__()
        self.top_db = top_db
        self.amin = amin

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        db = 10.0 * torch.log10(torch.clamp(power, min=self.amin))
        floor = db.amax(dim=(-2, -1), keepdim=True) - self.top_db
        return torch.max(db, floor)


class _SwapAxes12(nn.Module):
    """``(B, C, F, T) <-> (B, F, C, T)``, so BatchNorm2d normalises each mel band."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class DashengEncoder(AudioEncoder):
    """Dasheng-Base returning per-layer time tokens (one per 40 ms).

    Parameters
    ----------
    dim, depth, num_heads : int, default=768, 12, 12
        Width, blocks and heads (Dasheng-Base).
    n_mels : int, default=64
    patch_frames : int, default=4
        Frames per patch (each patch spans all mel bands).
    target_length : int, default=1008
        Frames per chunk (and length of the time embedding, in frames).
    top_db : float, default=120.0

    Examples
    --------
    >>> import torch
    >>> enc = DashengEncoder(dim=32, depth=2, num_heads=2).eval()
    >>> enc(torch.zeros(1, 16000)).shape
    torch.Size([1, 25, 32])
    """

    sample_rate = 16000
    n_layers = 12

    def __init__(
        self,
        *,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        n_mels: int = 64,
        patch_frames: int = 4,
        target_length: int = 1008,
        top_db: float = 120.0,
    ) -> None:
        super().__init__()
        self.n_layers = depth
        self.dim = dim
        self.num_heads = num_heads
        self.hop_length = 160
        self.n_fft = 512
        self.patch_frames = patch_frames
        self.chunk_patches = target_length // patch_frames
        with computed_buffers():  # torchaudio checks its mel filters numerically
            self.front_end = nn.Sequential(
                torchaudio.transforms.MelSpectrogram(
                    sample_rate=16000,
                    n_fft=self.n_fft,
                    win_length=512,
                    hop_length=self.hop_length,
                    f_min=0.0,
                    f_max=8000.0,
                    n_mels=n_mels,
                    center=True,
                ),
                _ClipDecibels(top_db),
            )
        self.init_bn = nn.Sequential(_SwapAxes12(), nn.BatchNorm2d(n_mels, momentum=0.01), _SwapAxes12())
        self.patch_embed = PatchEmbed((n_mels, patch_frames), 1, dim)
        self.time_pos_embed = nn.Parameter(torch.randn(1, dim, 1, self.chunk_patches) * 0.02)
        self.freq_pos_embed = nn.Parameter(torch.randn(1, dim, 1, 1) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, num_heads, qkv_bias=True, eps=1e-6) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    # ----------------------------------------------------------------- front end
    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """Batch-normalised log-mel ``(B, S) -> (B, 1, 64, T)``, ``T = 1 + S // 160``."""
        if wav.ndim != 2:
            raise ValueError(f"wav must be 2-D (batch, samples), got shape {tuple(wav.shape)}")
        min_samples = self._min_samples()
        if wav.shape[1] < min_samples:
            raise ValueError(f"Dasheng needs at least {min_samples} samples per clip, got {wav.shape[1]}")
        with torch.autocast(device_type=wav.device.type, enabled=False):
            mel = self.front_end(wav.float())
            return self.init_bn(mel.unsqueeze(1))

    def _min_samples(self) -> int:
        # reflect padding needs more than n_fft // 2 samples; one patch needs patch_frames frames
        return max(self.n_fft // 2 + 1, (self.patch_frames - 1) * self.hop_length)

    def n_frames(self, n_samples: int) -> int:
        """Spectrogram frames of a clip of ``n_samples`` samples (``center=True``)."""
        return 1 + int(n_samples) // self.hop_length

    # ------------------------------------------------------------ transformer
    def _run_blocks(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """Embedded patches ``(N, D, 1, t)`` of one chunk length through the blocks."""
        t = x.shape[-1]
        x = x + self.time_pos_embed[..., :t] + self.freq_pos_embed
        x = x.flatten(2).transpose(1, 2)  # (f t) order; f = 1
        return run_blocks(x, self.blocks, layers, self._layer_output)

    def _layer_output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return self.norm(x) if index == self.n_layers - 1 else x

    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Token maps ``(B, n_time, 768)`` of the requested layers; stops after ``max(layers)``."""
        layers = check_layers(layers, self.n_layers)
        patches = self.patch_embed.proj(self.spectrogram(wav))  # B, D, 1, P
        b, d, f, p = patches.shape
        n_full, rest = divmod(p, self.chunk_patches)
        pieces: list[list[torch.Tensor]] = []
        if n_full:
            # All full chunks go through the blocks together, as extra batch items.
            full = patches[..., : n_full * self.chunk_patches].unflatten(-1, (n_full, self.chunk_patches))
            full = full.permute(0, 3, 1, 2, 4).reshape(b * n_full, d, f, self.chunk_patches)
            pieces.append([y.reshape(b, n_full * y.shape[1], y.shape[2]) for y in self._run_blocks(full, layers)])
        if rest:
            pieces.append(self._run_blocks(patches[..., n_full * self.chunk_patches :], layers))
        return [torch.cat(parts, dim=1) for parts in zip(*pieces)]

    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        """No prefix tokens; ``n_frames // 4`` time tokens, one band, 40 ms apart."""
        n_time = self.n_frames(n_samples) // self.patch_frames
        if int(n_samples) < self._min_samples() or n_time < 1:
            raise ValueError(f"Dasheng needs at least {self._min_samples()} samples per clip, got {n_samples}")
        return TokenLayout(0, n_time, 1, self.dim, self.patch_frames * self.hop_length / self.sample_rate, "freq_time")

    # ------------------------------------------------------------ checkpoints
    def unwrap_checkpoint(self, obj: Any) -> dict[str, torch.Tensor]:
        """The state dict of the official ``{'model': ..., 'config': ...}`` file, after checking its ``config``."""
        if isinstance(obj, Mapping) and isinstance(obj.get("config"), Mapping):
            self.check_config(obj["config"], "the file")
        return super().unwrap_checkpoint(obj)

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """See :func:`convert_dasheng_state_dict`."""
        return convert_dasheng_state_dict(state)

    def check_config(self, config: Mapping[str, Any], source: str = "checkpoint") -> None:
        """Raise ValueError if the checkpoint ``config`` asks for settings this module lacks."""
        expected: dict[str, Any] = {
            "embed_dim": self.dim,
            "depth": self.n_layers,
            "num_heads": self.num_heads,
            "pooling": "mean",
            "patch_size": [self.init_bn[1].num_features, self.patch_frames],
            "patch_stride": [self.init_bn[1].num_features, self.patch_frames],
            "target_length": self.chunk_patches * self.patch_frames,
            "n_mels": self.init_bn[1].num_features,
            "n_fft": self.n_fft,
            "hop_size": self.hop_length,
            "win_size": 512,
            "f_min": 0,
            "f_max": 8000,
            "center": True,
            "init_values": None,
            "top_db": self.front_end[1].top_db,
        }
        wrong = []
        for key, value in expected.items():
            if key in config:
                got = list(config[key]) if isinstance(config[key], (tuple, list)) else config[key]
                if got != value:
                    wrong.append(f"{key}={config[key]!r} (expected {value!r})")
        if wrong:
            raise ValueError(f"{source} has a Dasheng config this encoder does not implement: {', '.join(wrong)}")


def convert_dasheng_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Dasheng state dict to :class:`DashengEncoder` keys.

    The released file uses the module's own names; a leading ``module.`` (DDP)
    or ``encoder.`` (an ``AudioTransformerMAE`` training checkpoint) is
    stripped and the MAE ``decoder.*`` is dropped.
    """
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("decoder."):
            continue
        out[key.removeprefix("encoder.")] = value
    return out


register_builtin(
    EncoderSpec(
        name="dasheng",
        builder=DashengEncoder,
        sample_rate=16000,
        clip_seconds=10.0,
        license="Apache-2.0 (XiaoMi/dasheng)",
        weights_source=(
            "https://zenodo.org/records/11511780 (file dasheng_base.pt; linked from github.com/XiaoMi/dasheng)"
        ),
        weights_file="dasheng_base.pt",
        description=(
            "Dasheng-Base (MAE on 272k h); 64-mel x 4-frame patches: 250 time tokens of 768 per 10 s "
            "(one per 40 ms, no frequency axis), no [cls]"
        ),
        extra={"token_order": "freq_time (n_freq = 1)", "frames_per_10s": 1001, "chunk_tokens": 252},
    ),
)
