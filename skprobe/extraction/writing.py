"""The transformer and its token store: the store's configuration, extraction into it, reading back."""

from __future__ import annotations

import os
import warnings
from numbers import Integral

import numpy as np
import torch

from .._torch import resolve_device
from .._version import __version__
from ..encoders.identity import weights_id
from .result import ExtractionResult
from .store import TokenStore
from .store.writer import DeferredWriter
from .streaming import stream_tokens

__all__ = ["extract_into", "extract_to_store", "store_config", "tokens_in_memory"]


def store_config(transformer, compute: torch.dtype) -> dict:
    """Everything that changes the tokens of a fitted transformer: the store's configuration key."""
    path = transformer._checkpoint_path()
    if path is not None:
        weights = weights_id(checkpoint=path)
    else:  # the builder makes the weights (a seed, a user's code): hash what it built, on the compute device
        weights = weights_id(module=transformer._load(resolve_device(transformer.device)))
    return {
        "encoder": transformer.encoder_spec_.name,
        "checkpoint_sha256": weights,
        "layers": transformer.layers_,
        "input_sample_rate": transformer.sample_rate,
        "clip_seconds": transformer.clip_seconds_,
        "compute_dtype": str(compute),
        "skprobe": __version__,
    }


def extract_into(transformer, X, store: TokenStore, computed: dict | None = None) -> ExtractionResult:
    """Extract ``X`` into ``store``; with ``computed``, also keep the tokens computed here, by clip key.

    The writer is made only when a clip must be stored, so a read-only store serves the clips it holds.
    """
    result = ExtractionResult([], 0, [])
    out_dtype = _out_dtype(transformer)
    with DeferredWriter(store) as writer:
        for keys, tokens, n in stream_tokens(transformer, X, store=store, writer=writer, result=result):
            result.n_forwarded += n
            if computed is not None:  # as the store holds them (tokens may be a reused pinned buffer)
                computed.update(zip(keys, np.asarray(tokens).astype(store.dtype).astype(out_dtype)))
    return result


def tokens_in_memory(transformer, X, store: TokenStore) -> np.ndarray:
    """Tokens of ``X`` as an ndarray: those computed now as computed, the others read from ``store``."""
    computed: dict[str, np.ndarray] = {}
    keys = [k for k in extract_into(transformer, X, store, computed).keys if k is not None]
    stored = [k for k in dict.fromkeys(keys) if k not in computed]
    rows = dict(zip(stored, store.read(stored))) if stored else {}
    out = np.empty((len(keys), *store.row_shape), _out_dtype(transformer))
    for i, key in enumerate(keys):
        out[i] = computed[key] if key in computed else rows[key]
    return out[:, 0] if isinstance(transformer.layers, Integral) else out


def _out_dtype(transformer) -> type:
    return np.float16 if transformer.output_dtype == "float16" else np.float32
def extract_to_store(X, store: str | os.PathLike | None = None, **params) -> ExtractionResult:
    """Extract the tokens of ``X`` into the token store under ``store``, from this process.

    A plain function for workers (Dask, job arrays): it builds a
    :class:`FrozenEncoderTransformer` with ``params``, fits it (no weights are
    read) and calls its :meth:`~FrozenEncoderTransformer.extract_to_store`. The
    encoder is kept in memory between calls in one process.

    Parameters
    ----------
    X : list, array or iterable of clips or audio file paths
    store : path-like
        Root folder of the token store (``cache=``, its deprecated name, still works and warns).
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
    >>> len(result.keys), result.n_forwarded
    (2, 2)
    """
    from .transformer import FrozenEncoderTransformer

    if "cache" in params:
        warnings.warn("extract_to_store(cache=...) is deprecated: pass the token store as store=...",
                      DeprecationWarning, stacklevel=2)
        if store is not None:
            raise ValueError("pass the token store as store=... only (cache= is its deprecated name)")
        store = params.pop("cache")
    if store is None:
        raise ValueError("extract_to_store needs store=<folder> (the token store's root)")
    return FrozenEncoderTransformer(store=store, **params).fit(None).extract_to_store(X)
