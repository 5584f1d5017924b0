"""BEATs (Chen et al., 2022) as a frozen skprobe encoder.

Mirrors the official release in ``microsoft/unilm``, folder ``beats/``
(``BEATs.py``, ``backbone.py``, ``modules.py``), and loads its checkpoints
as published there: the self-supervised ``BEATs_iter3.pt`` (and the other
pre-trained iterations, which share the architecture) under the name
``"beats"``, and the AudioSet-2M fine-tuned ``BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt*.pt``
under ``"beats-as2m-ft"``.

What the official ``BEATs.extract_features`` computes, and this module too:

* Front end: waveform x 2**15, Kaldi fbank (128 bins, 16 kHz, 25 ms povey
  window, 10 ms hop, dither 0), normalised as ``(x - 15.41663) / (2 * 6.55582)``.
  No padding or cropping: a 10 s clip gives 998 frames.
* Patches: 16 x 16 convolution (no bias) over (time, mel), so 998 frames give
  62 x 8 patches (trailing frames that do not fill a patch are dropped);
  flattened time-major, LayerNorm(512), then ``Linear(512 -> 768)``.
  **No [cls] token, and 496 (not 512) patch tokens for a 10 s clip.**
* Positions: a weight-normalised grouped convolution over the token sequence
  (kernel 128, 16 groups, last output frame dropped, GELU) added to the input,
  then LayerNorm; plus, in every attention layer, a relative position bias
  (320 log-spaced buckets up to distance 800, one table shared by all layers)
  scaled per query by a learned gate (``grep_linear``, ``grep_a``).
* Blocks: 12 post-norm ("deep norm") layers: ``LN(alpha * x + attn(x))`` then
  ``LN(alpha * x + fc2(gelu(fc1(x))))`` with ``alpha = (2 * 12) ** 0.25``.
  There is no final norm; layer ``i`` of :meth:`BEATsEncoder.forward_layers`
  is the output of transformer layer ``i``, and the last one equals the
  official ``extract_features`` output.

Checkpoints are ``{'cfg': {...}, 'model': state_dict}``; fine-tuned ones add
``predictor.weight`` / ``predictor.bias`` (527 AudioSet classes) and
``label_dict``. The state dict loads as it is; the classifier head is dropped
and the ``cfg`` is checked against this architecture.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import AudioEncoder, TokenLayout
from ..components.frontends import KaldiFbank
from ..layers import check_layers, run_blocks
from ..registry import EncoderSpec, register_builtin

__all__ = ["BEATsEncoder", "relative_position_bucket", "convert_beats_state_dict"]

FBANK_MEAN = 15.41663
FBANK_STD = 6.55582

# The BEATsConfig defaults of the official code, for the keys that change the
# architecture: a checkpoint's ``cfg`` overrides them.
_OFFICIAL_DEFAULTS: dict[str, Any] = {
    "input_patch_size": -1,
    "embed_dim": 512,
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "deep_norm": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": False,
    "num_buckets": 320,
    "max_distance": 1280,
    "gru_rel_pos": False,
    "finetuned_model": False,
}


def relative_position_bucket(relative: torch.Tensor, num_buckets: int = 320, max_distance: int = 800) -> torch.Tensor:
    """Bucket index of each relative position ``key - query`` (bidirectional).

    Half of the buckets hold positive offsets; within each half, distances
    below a quarter of ``num_buckets`` get their own bucket and larger ones
    share log-spaced buckets up to ``max_distance``.

    Parameters
    ----------
    relative : LongTensor
        Relative positions ``key_index - query_index``.
    num_buckets, max_distance : int
        BEATs iter3 uses 320 and 800.

    Returns
    -------
    LongTensor
        Same shape as ``relative``, values in ``0 .. num_buckets - 1``.

    Examples
    --------
    >>> import torch
    >>> relative_position_bucket(torch.tensor([0, 1, -1, 79, 80, 10_000]))
    tensor([  0, 161,   1, 239, 240, 319])
    """
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    max_exact = half // 2
    # Same float32 operations as the official code, so boundaries match exactly;
    # the clamp only avoids log(0) for distances that use the exact branch anyway.
    scaled = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (scaled * (half - max_exact)).long()
    large = large.clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class _WeightNormConv1d(nn.Module):
    """Grouped Conv1d with weight normalisation over dim 2 (one magnitude per tap).

    Stores ``weight_g`` (1, 1, K) and ``weight_v`` (C, C / groups, K) as
    :func:`torch.nn.utils.weight_norm` with ``dim=2`` does, so the official
    parameters load under their own names.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.padding = kernel_size // 2
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.normal_(self.weight_v, std=math.sqrt(4.0 / (kernel_size * channels)))
        with torch.no_grad():
            self.weight_g.copy_(self.weight_v.norm(dim=(0, 1), keepdim=True))

    def weight(self) -> torch.Tensor:
        """The effective kernel ``v * g / ||v||`` (norm over all dims but the tap)."""
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


class _DropLastStep(nn.Module):
    """Drops the extra output step an even-sized 'same' convolution produces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :-1]


class _GatedRelPosAttention(nn.Module):
    """Self-attention with a gated, bucketed relative position bias.

    ``x (B, N, D)`` and a raw bias table ``(H, N, N)`` give ``(B, N, D)``;
    each query row of the bias is scaled by ``a * (b * grep_a - 1) + 2`` with
    ``a, b`` sigmoid gates computed from that query's head vector.
    """

    def __init__(self, dim: int, num_heads: int, num_buckets: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.relative_attention_bias = nn.Embedding(num_buckets, num_heads)
        self.grep_linear = nn.Linear(dim // num_heads, 8)
        self.grep_a = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.num_heads
        q = self.q_proj(x).view(b, n, h, -1).transpose(1, 2)  # B, H, N, d_h
        k = self.k_proj(x).view(b, n, h, -1).transpose(1, 2)
        v = self.v_proj(x).view(b, n, h, -1).transpose(1, 2)
        gates = torch.sigmoid(self.grep_linear(q).view(b, h, n, 2, 4).sum(-1))
        gate_a, gate_b = gates.chunk(2, dim=-1)  # B, H, N, 1 each
        gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0
        bias = (gate * position_bias).to(q.dtype)  # B, H, N, N
        # The official max-subtraction and 1/32 rescaling of the logits only
        # guard fp16 overflow; softmax is unchanged by them.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class _BEATsLayer(nn.Module):
    """Post-norm transformer layer with deep-norm residual scaling."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, num_buckets: int, residual_scale: float) -> None:
        super().__init__()
        self.residual_scale = residual_scale
        self.self_attn = _GatedRelPosAttention(dim, num_heads, num_buckets)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_layer_norm(x * self.residual_scale + self.self_attn(x, position_bias))
        hidden = self.fc1(x)
        hidden = F.gelu(hidden.float()).type_as(hidden)
        return self.final_layer_norm(x * self.residual_scale + self.fc2(hidden))


class _BEATsTransformer(nn.Module):
    """The official ``TransformerEncoder``: convolutional positions, LayerNorm, layers."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, ffn_dim: int, conv_pos: int, conv_pos_groups: int, num_buckets: int
    ) -> None:
        super().__init__()
        self.pos_conv = nn.Sequential(_WeightNormConv1d(dim, conv_pos, conv_pos_groups), _DropLastStep(), nn.GELU())
        residual_scale = math.pow(2 * depth, 1 / 4)
        self.layers = nn.ModuleList(
            [_BEATsLayer(dim, num_heads, ffn_dim, num_buckets, residual_scale) for _ in range(depth)]
        )
        # One bias table for all layers, registered under every layer as in the
        # official code (so the state dict names it once per layer).
        shared = self.layers[0].self_attn.relative_attention_bias
        for layer in self.layers[1:]:
            layer.self_attn.relative_attention_bias = shared
        self.layer_norm = nn.LayerNorm(dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Add convolutional positions and normalise, ``(B, N, D) -> (B, N, D)``."""
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        return self.layer_norm(x)


class BEATsEncoder(AudioEncoder):
    """BEATs ViT-B (iter3 architecture) returning per-layer patch tokens.

    Parameters
    ----------
    finetuned : bool, default=False
        Expect AudioSet fine-tuned checkpoints (with a ``predictor`` head,
        which is dropped) instead of self-supervised ones.
    embed_dim, dim, depth, num_heads, ffn_dim : int
        Patch-embedding width (512), transformer width (768), layers (12),
        heads (12) and feed-forward width (3072) of the released models.
    patch_size : int, default=16
        Square patch size in frames and mel bins.
    conv_pos, conv_pos_groups : int, default=128, 16
        Kernel size and groups of the convolutional position embedding.
    num_buckets, max_distance : int, default=320, 800
        Relative position buckets and the distance of the last bucket.
    num_mel_bins : int, default=128

    Examples
    --------
    >>> import torch
    >>> enc = BEATsEncoder(dim=32, embed_dim=16, depth=2, num_heads=2, ffn_dim=64, conv_pos=8, conv_pos_groups=2).eval()
    >>> tokens = enc.forward_layers(torch.zeros(1, 16000), [1])[0]
    >>> tokens.shape, enc.layout(16000, 1).n_tokens
    (torch.Size([1, 48, 32]), 48)
    """

    sample_rate = 16000
    n_layers = 12

    def __init__(
        self,
        finetuned: bool = False,
        *,
        embed_dim: int = 512,
        dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        ffn_dim: int = 3072,
        patch_size: int = 16,
        conv_pos: int = 128,
        conv_pos_groups: int = 16,
        num_buckets: int = 320,
        max_distance: int = 800,
        num_mel_bins: int = 128,
    ) -> None:
        super().__init__()
        if num_mel_bins % patch_size:
            raise ValueError(f"num_mel_bins={num_mel_bins} is not a multiple of patch_size={patch_size}")
        self.finetuned = finetuned
        self.n_layers = depth
        self.dim = dim
        self.patch_size = patch_size
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self._arch = {
            "input_patch_size": patch_size,
            "embed_dim": embed_dim,
            "conv_bias": False,
            "encoder_layers": depth,
            "encoder_embed_dim": dim,
            "encoder_ffn_embed_dim": ffn_dim,
            "encoder_attention_heads": num_heads,
            "activation_fn": "gelu",
            "layer_norm_first": False,
            "deep_norm": True,
            "conv_pos": conv_pos,
            "conv_pos_groups": conv_pos_groups,
            "relative_position_embedding": True,
            "num_buckets": num_buckets,
            "max_distance": max_distance,
            "gru_rel_pos": True,
            "finetuned_model": finetuned,
        }
        self.fbank = KaldiFbank(sample_frequency=16000, num_mel_bins=num_mel_bins, window_type="povey")
        self.patch_embedding = nn.Conv2d(1, embed_dim, patch_size, stride=patch_size, bias=False)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.post_extract_proj = nn.Linear(embed_dim, dim) if embed_dim != dim else None
        self.encoder = _BEATsTransformer(dim, depth, num_heads, ffn_dim, conv_pos, conv_pos_groups, num_buckets)
        self._bucket_cache: dict[int, torch.Tensor] = {}

    # ----------------------------------------------------------------- front end
    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """Normalised fbank of the official ``preprocess``: ``(B, S) -> (B, T, 128)``."""
        if wav.ndim != 2:
            raise ValueError(f"wav must be 2-D (batch, samples), got shape {tuple(wav.shape)}")
        min_samples = self._min_samples()
        if wav.shape[1] < min_samples:
            raise ValueError(
                f"BEATs needs at least {min_samples} samples ({self.patch_size} frames) per clip, got {wav.shape[1]}"
            )
        with torch.autocast(device_type=wav.device.type, enabled=False):
            fbank = self.fbank(wav.float() * 2**15)
        return (fbank - FBANK_MEAN) / (2 * FBANK_STD)

    def _min_samples(self) -> int:
        return self.fbank.window_size + (self.patch_size - 1) * self.fbank.window_shift

    def patch_tokens(self, wav: torch.Tensor) -> torch.Tensor:
        """Projected patch embeddings before the transformer, ``(B, T' * F', D)``."""
        features = self.patch_embedding(self.spectrogram(wav).unsqueeze(1))  # B, C, T', F'
        features = self.layer_norm(features.flatten(2).transpose(1, 2))  # time-major
        return self.post_extract_proj(features) if self.post_extract_proj is not None else features

    # ------------------------------------------------------------ transformer
    def position_bias(self, n_tokens: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Raw relative position bias ``(heads, n_tokens, n_tokens)`` before gating."""
        buckets = self._bucket_cache.get(n_tokens)
        if buckets is None:
            # Bucketed on the CPU, as the official code does, so float rounding
            # of the log never depends on the device.
            pos = torch.arange(n_tokens)
            buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
            self._bucket_cache = {n_tokens: buckets}
        table = self.encoder.layers[0].self_attn.relative_attention_bias
        return table(buckets.to(device=table.weight.device)).permute(2, 0, 1).to(device)

    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of the requested transformer layers, each ``(B, N, 768)``.

        The forward stops after ``max(layers)``.
        """
        layers = check_layers(layers, self.n_layers)
        x = self.encoder.embed(self.patch_tokens(wav))
        bias = self.position_bias(x.shape[1], x.device)
        return run_blocks(x, [functools.partial(layer, position_bias=bias) for layer in self.encoder.layers], layers)

    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        """No prefix tokens; ``(frames // 16) x 8`` patches, time-major, 0.16 s apart."""
        n_frames = self.fbank.n_frames(int(n_samples))
        n_time = n_frames // self.patch_size
        if n_time < 1:
            raise ValueError(f"BEATs needs at least {self._min_samples()} samples per clip, got {n_samples}")
        n_freq = self.fbank.mel_banks.shape[1] // self.patch_size
        hop = self.patch_size * self.fbank.window_shift / self.sample_rate
        return TokenLayout(0, n_time, n_freq, self.dim, hop, "time_freq")

    # ------------------------------------------------------------ checkpoints
    def check_config(self, cfg: Mapping[str, Any], source: str = "checkpoint") -> None:
        """Raise ValueError if a checkpoint's ``cfg`` describes another architecture.

        Keys absent from ``cfg`` take the official ``BEATsConfig`` defaults.
        """
        effective = {**_OFFICIAL_DEFAULTS, **{k: cfg[k] for k in _OFFICIAL_DEFAULTS if k in cfg}}
        wrong = [f"{k}={effective[k]!r} (expected {v!r})" for k, v in self._arch.items() if effective[k] != v]
        if wrong:
            hint = ""
            if effective["finetuned_model"] != self.finetuned:
                hint = (
                    "; this is a fine-tuned checkpoint, use encoder='beats-as2m-ft'"
                    if effective["finetuned_model"]
                    else "; this is a self-supervised checkpoint, use encoder='beats'"
                )
            raise ValueError(f"{source} has a BEATs cfg this encoder does not implement: {', '.join(wrong)}{hint}")

    def unwrap_checkpoint(self, obj: Any) -> dict[str, torch.Tensor]:
        """The state dict of an official file ``{'cfg': ..., 'model': ...}``, after checking its ``cfg``."""
        if isinstance(obj, Mapping) and isinstance(obj.get("cfg"), Mapping):
            self.check_config(obj["cfg"], "the file")
        return super().unwrap_checkpoint(obj)

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """See :func:`convert_beats_state_dict`."""
        return convert_beats_state_dict(state, finetuned=self.finetuned, depth=self.n_layers)


def convert_beats_state_dict(
    state: Mapping[str, torch.Tensor], *, finetuned: bool = False, depth: int = 12
) -> dict[str, torch.Tensor]:
    """Official BEATs state dict to :class:`BEATsEncoder` keys.

    The names are the same; the fine-tuned AudioSet head (``predictor.*``) is
    dropped, and the shared relative-position table is repeated under every
    layer when a file stores it only once.

    Raises
    ------
    ValueError
        If a fine-tuned checkpoint is given for the self-supervised encoder or
        the other way round.
    """
    has_head = any(k.startswith("predictor.") for k in state)
    if has_head and not finetuned:
        raise ValueError(
            "the checkpoint holds an AudioSet classifier (predictor.*), so it is a fine-tuned BEATs "
            "checkpoint: use encoder='beats-as2m-ft'"
        )
    if finetuned and not has_head:
        raise ValueError(
            "the checkpoint has no AudioSet classifier (predictor.weight), so it is a self-supervised "
            "BEATs checkpoint: use encoder='beats'"
        )
    out = {k: v for k, v in state.items() if not k.startswith("predictor.")}
    table = "encoder.layers.{}.self_attn.relative_attention_bias.weight"
    if table.format(0) in out:
        for i in range(1, depth):
            out.setdefault(table.format(i), out[table.format(0)])
    return out


_COMMON = dict(
    sample_rate=16000,
    clip_seconds=10.0,
    license="MIT (code and checkpoints, microsoft/unilm)",
    weights_source="https://github.com/microsoft/unilm/tree/master/beats (download links in the README table)",
)

register_builtin(
    EncoderSpec(
        name="beats",
        builder=BEATsEncoder,
        weights_file="BEATs_iter3.pt",
        description="BEATs iter3, self-supervised on AudioSet-2M; 62x8 = 496 patch tokens per 10 s, no [cls]",
        extra={
            "token_order": "time_freq",
            "frames_per_10s": 998,
            "also_loads": ["BEATs_iter1.pt", "BEATs_iter2.pt", "BEATs_iter3_plus_AS20K.pt", "BEATs_iter3_plus_AS2M.pt"],
        },
        **_COMMON,
    ),
)
register_builtin(
    EncoderSpec(
        name="beats-as2m-ft",
        builder=functools.partial(BEATsEncoder, finetuned=True),
        weights_file="BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt",
        description="BEATs iter3+ fine-tuned on AudioSet-2M (classifier dropped); 496 patch tokens per 10 s, no [cls]",
        extra={
            "token_order": "time_freq",
            "frames_per_10s": 998,
            "also_loads": [
                "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt1.pt",
                "BEATs_iter3_finetuned_on_AS2M_cpt1.pt",
                "BEATs_iter3_finetuned_on_AS2M_cpt2.pt",
            ],
        },
        **_COMMON,
    ),
)
