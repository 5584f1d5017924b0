"""Audio encoders saved with Hugging Face ``transformers`` in a local folder.

Families: AST (``ASTModel``), wav2vec 2.0 (``Wav2Vec2Model``), HuBERT
(``HubertModel``), WavLM (``WavLMModel``) and the Whisper encoder
(``WhisperModel.encoder``). The checkpoint is a *folder* in
``save_pretrained`` layout (``config.json``, weights, and ideally
``preprocessor_config.json``); it is read with
``from_pretrained(folder, local_files_only=True)``, so no hub is contacted.
``transformers`` is an optional dependency (``pip install skprobe[transformers]``).

Front ends are batched torch re-implementations of the HF feature extractors,
run on the module's device:

* AST: Kaldi fbank (:class:`~skprobe.encoders.components.frontends.KaldiFbank`, Hann
  window, 25/10 ms, ``num_mel_bins``), zero-padded or cut to ``max_length``
  frames, then ``(x - mean) / (2 * std)`` when ``do_normalize``
  (``ASTFeatureExtractor``; the waveform is not scaled to 16-bit range, as in HF);
* wav2vec 2.0 / HuBERT / WavLM: the raw waveform, per clip zero-mean and
  unit-variance (``/ sqrt(var + 1e-7)``) when the folder's feature extractor
  has ``do_normalize`` (the ``Wav2Vec2FeatureExtractor`` default, used when the
  folder has no ``preprocessor_config.json``);
* Whisper: the clip zero-padded or cut to ``chunk_length`` (30 s), STFT
  (``n_fft`` 400, hop 160, periodic Hann, centred, reflect padding, last frame
  dropped), power, Slaney mel filters, ``log10`` floored at 1e-10 and at the
  clip's maximum minus 8, then ``(x + 4) / 4`` (``WhisperFeatureExtractor``).

Layers: layer ``l`` is the output of transformer block ``l`` (0-based); the
embedding output (before the first block) is not exposed. The last layer is the
model's ``last_hidden_state``, i.e. it includes the final layer norm where the
model has one (AST ``layernorm``; Whisper's and the stable-layer-norm variants'
``encoder.layer_norm``). Intermediate layers equal the model's
``hidden_states[l + 1]``; they are read with forward hooks on the blocks
because the last ``hidden_states`` entry means different things in different
transformers releases (for AST it is the normed output in 4.57, the raw block
output in 5.x). The block list is cut after the deepest requested block, so
the forward stops early.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import AudioEncoder, TokenLayout
from ..components.frontends import KaldiFbank
from ..layers import check_layers
from ..registry import EncoderSpec, register_builtin

__all__ = ["HFAudioEncoder", "HFASTEncoder", "HFWav2Vec2Encoder", "HFWhisperEncoder"]

_HF_HELP = "a folder written by transformers' save_pretrained (config.json + model.safetensors or pytorch_model.bin)"


def _transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the hf-* encoders need the optional dependency transformers>=4.40: "
            "pip install 'skprobe[transformers]' (or pip install 'transformers>=4.40')"
        ) from exc
    return transformers


def _feature_extractor(cls, folder: Path):
    """The folder's feature extractor settings, or the class defaults if it has none."""
    if (folder / "preprocessor_config.json").is_file():
        return cls.from_pretrained(str(folder), local_files_only=True)
    return cls()


def _find_blocks(root: nn.Module, candidates: Sequence[str], n_blocks: int) -> tuple[nn.Module, str]:
    """The module and attribute name of the transformer block list (it moved between releases)."""
    for path in candidates:
        owner_path, _, attr = path.rpartition(".")
        try:
            owner = root.get_submodule(owner_path) if owner_path else root
        except AttributeError:
            continue
        blocks = getattr(owner, attr, None)
        if isinstance(blocks, nn.ModuleList) and len(blocks) == n_blocks:
            return owner, attr
    raise ValueError(f"cannot find the {n_blocks} transformer blocks of {type(root).__name__} (tried {list(candidates)})")


def _block_output(store: dict, index: int):
    def hook(module, args, output):
        store[index] = output[0] if isinstance(output, (tuple, list)) else output

    return hook


class HFAudioEncoder(AudioEncoder):
    """Base class: a transformers model loaded from a local folder.

    Subclasses set :attr:`model_types` (accepted ``config.model_type`` values)
    and :attr:`reference_config`, and implement :meth:`_load_model`,
    :meth:`_features`, :meth:`_run`, :meth:`_blocks_owner` and
    :meth:`_layout` (the layout computed from a config).

    Before a folder is loaded, :meth:`describe` reports the architecture of
    the reference checkpoint named in the registry (the values of its
    ``config.json`` and feature extractor in :attr:`reference_config`);
    :meth:`layout` needs the loaded folder.
    """

    sample_rate = 16000
    model_types: tuple[str, ...] = ()
    family = ""
    layout_needs_weights = True  # the architecture comes from the folder's config.json
    #: Layout-relevant settings of the reference checkpoint, used by describe() before loading.
    reference_config: dict[str, Any] = {}

    def __init__(self) -> None:
        super().__init__()
        self.model: nn.Module | None = None
        self.config = None

    # -- loading -----------------------------------------------------------
    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Build the model from a ``save_pretrained`` folder, offline.

        Raises
        ------
        ImportError
            If transformers is not installed.
        ValueError
            If ``path`` is not such a folder or holds another model family.
        """
        folder = Path(path)
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise ValueError(
                f"checkpoint for hf-{self.family} must be {_HF_HELP}; got {folder}"
            )
        tf = _transformers()
        config = tf.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        if config.model_type not in self.model_types:
            raise ValueError(
                f"{folder} holds a {config.model_type!r} model; encoder hf-{self.family} expects "
                f"model_type {' or '.join(map(repr, self.model_types))}"
            )
        self.config = config
        self.model = self._load_model(tf, folder).float().eval()
        self._setup_frontend(tf, folder)

    def _require_loaded(self) -> None:
        if self.model is None:
            raise RuntimeError(
                f"hf-{self.family} has no weights yet: use skprobe.encoders.load_encoder("
                f"'hf-{self.family}', checkpoint=<save_pretrained folder>)"
            )

    # -- forward -----------------------------------------------------------
    def forward_layers(self, wav: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        self._require_loaded()
        if wav.ndim != 2:
            raise ValueError(f"wav must be 2-D (batch, samples), got shape {tuple(wav.shape)}")
        layers = check_layers(layers, self.n_layers)
        features = self._features(wav.float())
        owner, attr = self._blocks_owner()
        blocks = getattr(owner, attr)
        last = self.n_layers - 1
        deepest = max(layers)
        captured: dict[int, torch.Tensor] = {}
        handles = [blocks[i].register_forward_hook(_block_output(captured, i)) for i in set(layers) if i != last]
        try:
            if deepest < last:
                setattr(owner, attr, nn.ModuleList(list(blocks)[: deepest + 1]))  # stop early
            final = self._run(features)
        finally:
            setattr(owner, attr, blocks)
            for handle in handles:
                handle.remove()
        return [self._select(final if i == last else captured[i], wav.shape[1]) for i in layers]

    def _select(self, tokens: torch.Tensor, n_samples: int) -> torch.Tensor:
        return tokens

    # -- layout ------------------------------------------------------------
    def layout(self, n_samples: int, layer: int) -> TokenLayout:
        self._require_loaded()
        return self._layout(self._loaded_config(), n_samples)

    def describe(self, n_samples: int) -> dict[str, Any]:
        """Architecture facts of the loaded folder, or of the reference checkpoint before loading."""
        if self.model is not None:
            return super().describe(n_samples)
        cfg = SimpleNamespace(**self.reference_config)
        lay = self._layout(cfg, n_samples)
        return {
            "n_layers": cfg.n_layers,
            "dim": lay.dim,
            "prefix_tokens": lay.prefix_tokens,
            "token_grid": (lay.n_time, lay.n_freq),
            "n_heads": cfg.n_heads,
        }

    def _loaded_config(self) -> SimpleNamespace:
        """The settings :meth:`_layout` reads, from the loaded folder."""
        raise NotImplementedError

    def _layout(self, cfg: SimpleNamespace, n_samples: int) -> TokenLayout:
        raise NotImplementedError

    # -- per family --------------------------------------------------------
    def _load_model(self, tf, folder: Path) -> nn.Module:
        raise NotImplementedError

    def _setup_frontend(self, tf, folder: Path) -> None:
        raise NotImplementedError

    def _features(self, wav: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _run(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _blocks_owner(self) -> tuple[nn.Module, str]:
        raise NotImplementedError


class HFASTEncoder(HFAudioEncoder):
    """Audio Spectrogram Transformer (``ASTModel``) from a local folder.

    Tokens: ``[cls]`` and ``[dist]`` (2 prefix tokens), then the patch grid in
    AST's own order, frequency-major (``order="freq_time"``): 12 frequency x
    101 time patches of 16 x 16 with stride 10 for the standard 128-bin,
    1024-frame input. The input is always padded or cut to ``max_length``
    frames, so the token count does not depend on the clip length.

    Examples
    --------
    >>> enc = HFASTEncoder()  # load weights with load_checkpoint(folder)
    >>> enc.n_layers
    12
    """

    model_types = ("audio-spectrogram-transformer",)
    family = "ast"
    n_layers = 12
    # MIT/ast-finetuned-audioset-10-10-0.4593 and its feature extractor (10 ms frame shift at 16 kHz)
    reference_config = dict(
        num_mel_bins=128, max_length=1024, patch_size=16, frequency_stride=10, time_stride=10, hidden_size=768,
        frame_shift=160, sample_rate=16000, n_layers=12, n_heads=12,
    )

    def _load_model(self, tf, folder: Path) -> nn.Module:
        self.n_layers = self.config.num_hidden_layers
        return tf.ASTModel.from_pretrained(str(folder), local_files_only=True)

    def _setup_frontend(self, tf, folder: Path) -> None:
        fe = _feature_extractor(tf.ASTFeatureExtractor, folder)
        cfg = self.config
        if fe.num_mel_bins != cfg.num_mel_bins or fe.max_length != cfg.max_length:
            raise ValueError(
                f"{folder}: feature extractor ({fe.num_mel_bins} bins, {fe.max_length} frames) does not match "
                f"the model config ({cfg.num_mel_bins} bins, {cfg.max_length} frames)"
            )
        self.sample_rate = int(fe.sampling_rate)
        self.fbank = KaldiFbank(
            sample_frequency=fe.sampling_rate, num_mel_bins=fe.num_mel_bins, window_type="hanning"
        ).to(next(self.model.parameters()).device)
        self.max_length = fe.max_length
        self.do_normalize = bool(fe.do_normalize)
        self.mean, self.std = float(fe.mean), float(fe.std)

    def _features(self, wav: torch.Tensor) -> torch.Tensor:
        fbank = self.fbank(wav)[:, : self.max_length]  # B, T, n_mels
        fbank = F.pad(fbank, (0, 0, 0, self.max_length - fbank.shape[1]))
        return (fbank - self.mean) / (2 * self.std) if self.do_normalize else fbank

    def _run(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(input_values=features).last_hidden_state

    def _blocks_owner(self) -> tuple[nn.Module, str]:
        # transformers < 5: model.encoder.layer; >= 5: model.layers
        return _find_blocks(self.model, ("encoder.layer", "layers"), self.n_layers)

    def _loaded_config(self) -> SimpleNamespace:
        return SimpleNamespace(
            **{**self.config.to_dict(), "frame_shift": self.fbank.window_shift, "sample_rate": self.sample_rate}
        )

    def _layout(self, cfg: SimpleNamespace, n_samples: int) -> TokenLayout:
        n_freq = (cfg.num_mel_bins - cfg.patch_size) // cfg.frequency_stride + 1
        n_time = (cfg.max_length - cfg.patch_size) // cfg.time_stride + 1
        hop = cfg.time_stride * cfg.frame_shift / cfg.sample_rate
        return TokenLayout(2, n_time, n_freq, cfg.hidden_size, hop, "freq_time")


class HFWav2Vec2Encoder(HFAudioEncoder):
    """wav2vec 2.0, HuBERT or WavLM (base model, no CTC head) from a local folder.

    Tokens: one per 20 ms frame of the convolutional feature encoder
    (``n_freq = 1``), no prefix tokens; ``n_time`` follows the conv stack,
    e.g. 499 for 10 s at 16 kHz.

    Parameters
    ----------
    family : {"wav2vec2", "hubert", "wavlm"}, default="wav2vec2"

    Examples
    --------
    >>> HFWav2Vec2Encoder("hubert").model_types
    ('hubert',)
    """

    n_layers = 12
    _models = {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel", "wavlm": "WavLMModel"}
    # The base models (facebook/wav2vec2-base, facebook/hubert-base-ls960, microsoft/wavlm-base-plus) share these.
    reference_config = dict(
        conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2), hidden_size=768, sample_rate=16000,
        n_layers=12, n_heads=12,
    )

    def __init__(self, family: str = "wav2vec2") -> None:
        super().__init__()
        if family not in self._models:
            raise ValueError(f"family must be one of {sorted(self._models)}, got {family!r}")
        self.family = family
        self.model_types = (family,)

    def _load_model(self, tf, folder: Path) -> nn.Module:
        if getattr(self.config, "add_adapter", False):
            raise ValueError(f"{folder}: wav2vec2 models with an adapter (add_adapter=True) are not supported")
        self.n_layers = self.config.num_hidden_layers
        return getattr(tf, self._models[self.family]).from_pretrained(str(folder), local_files_only=True)

    def _setup_frontend(self, tf, folder: Path) -> None:
        fe = _feature_extractor(tf.Wav2Vec2FeatureExtractor, folder)
        self.sample_rate = int(fe.sampling_rate)
        self.do_normalize = bool(fe.do_normalize)

    def _features(self, wav: torch.Tensor) -> torch.Tensor:
        if not self.do_normalize:
            return wav
        mean = wav.mean(dim=1, keepdim=True)
        var = wav.var(dim=1, unbiased=False, keepdim=True)
        return (wav - mean) / torch.sqrt(var + 1e-7)

    def _run(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(input_values=features).last_hidden_state

    def _blocks_owner(self) -> tuple[nn.Module, str]:
        return _find_blocks(self.model, ("encoder.layers",), self.n_layers)

    def _loaded_config(self) -> SimpleNamespace:
        return SimpleNamespace(**{**self.config.to_dict(), "sample_rate": self.sample_rate})

    def _layout(self, cfg: SimpleNamespace, n_samples: int) -> TokenLayout:
        n = n_samples
        for kernel, stride in zip(cfg.conv_kernel, cfg.conv_stride):
            n = max(0, (n - kernel) // stride + 1)
        hop = math.prod(cfg.conv_stride) / cfg.sample_rate
        return TokenLayout(0, n, 1, cfg.hidden_size, hop, "time_freq")


class HFWhisperEncoder(HFAudioEncoder):
    """The encoder of a Whisper model (``WhisperModel`` folder) from a local folder.

    Whisper always encodes 30 s (3000 mel frames, 1500 tokens at 20 ms). Only
    the tokens whose centre lies inside the clip are returned,
    ``n_time = min(1500, ceil(n_samples / 320))``; the padding's tokens are
    dropped. No prefix tokens, ``n_freq = 1``.

    Examples
    --------
    >>> HFWhisperEncoder().model_types
    ('whisper',)
    """

    model_types = ("whisper",)
    family = "whisper"
    n_layers = 6
    # openai/whisper-base: 30 s chunks, 10 ms frames, conv strides 1 and 2 (20 ms tokens)
    reference_config = dict(
        max_source_positions=1500, d_model=512, token_hop=320, n_samples=480000, sample_rate=16000,
        n_layers=6, n_heads=8,
    )

    def _load_model(self, tf, folder: Path) -> nn.Module:
        self.n_layers = self.config.encoder_layers
        return tf.WhisperModel.from_pretrained(str(folder), local_files_only=True).get_encoder()

    def _setup_frontend(self, tf, folder: Path) -> None:
        fe = _feature_extractor(tf.WhisperFeatureExtractor, folder)
        if fe.feature_size != self.config.num_mel_bins:
            raise ValueError(
                f"{folder}: feature extractor has {fe.feature_size} mel bins, the model {self.config.num_mel_bins}"
            )
        device = next(self.model.parameters()).device
        self.sample_rate = int(fe.sampling_rate)
        self.n_fft, self.hop_length, self.n_samples = int(fe.n_fft), int(fe.hop_length), int(fe.n_samples)
        self.register_buffer("window", torch.hann_window(self.n_fft, device=device), persistent=False)
        filters = torch.as_tensor(fe.mel_filters, dtype=torch.float32, device=device)  # n_freq, n_mels
        self.register_buffer("mel_filters", filters, persistent=False)

    def _features(self, wav: torch.Tensor) -> torch.Tensor:
        wav = F.pad(wav[:, : self.n_samples], (0, max(0, self.n_samples - wav.shape[1])))
        stft = torch.stft(wav, self.n_fft, self.hop_length, window=self.window, return_complex=True)
        power = stft[..., :-1].abs() ** 2  # B, n_freq, 3000
        log_spec = torch.clamp(self.mel_filters.T @ power, min=1e-10).log10()
        floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
        return (torch.maximum(log_spec, floor) + 4.0) / 4.0

    def _run(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(input_features=features).last_hidden_state

    def _blocks_owner(self) -> tuple[nn.Module, str]:
        return _find_blocks(self.model, ("layers",), self.n_layers)

    def _select(self, tokens: torch.Tensor, n_samples: int) -> torch.Tensor:
        return tokens[:, : self.layout(n_samples, 0).n_time]

    def _loaded_config(self) -> SimpleNamespace:
        token_hop = self.hop_length * self.model.conv1.stride[0] * self.model.conv2.stride[0]
        extra = {"token_hop": token_hop, "n_samples": self.n_samples, "sample_rate": self.sample_rate}
        return SimpleNamespace(**{**self.config.to_dict(), **extra})

    def _layout(self, cfg: SimpleNamespace, n_samples: int) -> TokenLayout:
        n_time = min(cfg.max_source_positions, -(-min(n_samples, cfg.n_samples) // cfg.token_hop))
        return TokenLayout(0, n_time, 1, cfg.d_model, cfg.token_hop / cfg.sample_rate, "time_freq")


_COMMON = dict(sample_rate=16000, requires_checkpoint=True, weights_file=f"save_pretrained folder ({_HF_HELP})")

register_builtin(
    EncoderSpec(
        name="hf-ast",
        builder=HFASTEncoder,
        clip_seconds=10.24,
        license="BSD-3-Clause",
        weights_source="https://huggingface.co/MIT/ast-finetuned-audioset-10-10-0.4593 (save_pretrained folder)",
        description="AST (transformers ASTModel) from a local folder; [cls]+[dist], 12 x 101 patches, freq-major",
        extra={"order": "freq_time", "family": "ast"},
        **_COMMON,
    ),
)
for _family, _source, _license, _description in (
    ("wav2vec2", "https://huggingface.co/facebook/wav2vec2-base", "Apache-2.0", "wav2vec 2.0"),
    ("hubert", "https://huggingface.co/facebook/hubert-base-ls960", "Apache-2.0", "HuBERT"),
    ("wavlm", "https://huggingface.co/microsoft/wavlm-base-plus", "MIT (microsoft/unilm)", "WavLM"),
):
    register_builtin(
        EncoderSpec(
            name=f"hf-{_family}",
            builder=partial(HFWav2Vec2Encoder, _family),
            clip_seconds=10.0,
            license=_license,
            weights_source=f"{_source} (save_pretrained folder)",
            description=f"{_description} (transformers, base) from a local folder; one token per 20 ms",
            extra={"family": _family},
            **_COMMON,
        ),
    )
register_builtin(
    EncoderSpec(
        name="hf-whisper",
        builder=HFWhisperEncoder,
        clip_seconds=30.0,
        license="MIT (openai/whisper); Apache-2.0 on the Hugging Face model card",
        weights_source="https://huggingface.co/openai/whisper-base (save_pretrained folder)",
        description="Whisper encoder (transformers, base) from a local folder; one token per 20 ms of the clip",
        extra={"family": "whisper"},
        **_COMMON,
    ),
)
