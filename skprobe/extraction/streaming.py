"""One pass over the inputs: decode ahead in threads, batch, run the encoder, yield token batches.

Memory is bounded by ``batch_size * prefetch`` waveforms whatever the number of
clips: inputs are pulled from ``X`` as the read-ahead frees up, never listed.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .._torch import resolve_device
from .batching import TokenBatcher
from .clips import check_clips, clip_head, clip_name, decode_clip, prepare_clip
from .compiled import LayerForward, compiled_forward
from .keys import clip_key
from .pipeline import DeviceRunner, read_ahead_chunks
from .result import ExtractionResult
from .store import StoreWriter, TokenStore
from .store.writer import DeferredWriter

__all__ = ["stream_tokens"]

#: Most clips handed to a read-ahead thread at once (fewer when the read-ahead is shallow).
READ_CHUNK = 16


def stream_tokens(transformer, X, *, store: TokenStore | None = None,
                  writer: StoreWriter | DeferredWriter | None = None,
                  result: ExtractionResult | None = None) -> Iterator[tuple]:
    """Yield ``(keys, tokens, n_computed)`` batch by batch for a fitted :class:`FrozenEncoderTransformer`.

    Without a store: tokens of every clip (float32 or ``output_dtype``), in
    input order. With one: clips it holds are skipped, and batches are
    committed through ``writer`` (see :class:`~.batching.TokenBatcher`);
    ``result`` collects the clip keys and the skipped bad inputs.
    """
    items = check_clips(X, transformer, reset=False)
    device = resolve_device(transformer.device)
    compute = transformer._compute_dtype(device)
    float16 = transformer.store_dtype if store is not None else transformer.output_dtype
    host_dtype = torch.float16 if float16 == "float16" else torch.float32

    def make_runner() -> DeviceRunner:
        encoder = transformer._load(device)
        if transformer.compile:
            layers = compiled_forward(encoder, transformer.layers_, transformer.batch_size, mode=transformer.compile)
        else:
            layers = functools.partial(encoder.forward_layers, layers=transformer.layers_)
        return DeviceRunner(lambda wav: _forward(transformer, layers, wav, compute), device, host_dtype)

    depth = transformer.batch_size * transformer.prefetch
    batcher = TokenBatcher(make_runner, transformer.batch_size, writer=writer, max_deferred=depth)
    if store is not None:
        store.refresh()
    n_workers = transformer.n_jobs if transformer.n_jobs is not None else min(4, os.cpu_count() or 1)
    # chunks of clips per read-ahead task: one task and one index lookup for many clips
    chunk = max(1, min(READ_CHUNK, depth // (2 * max(1, n_workers))))
    stream = read_ahead_chunks(items, lambda pairs: _load_clips(transformer, pairs, store), n_workers=n_workers,
                               depth=depth, chunk=chunk)
    progress = tqdm(total=len(X) if hasattr(X, "__len__") else None, unit="clip",
                    disable=not transformer.verbose, desc=f"{transformer.encoder_spec_.name} tokens")
    error = None
    try:
        for i, clip, exc in stream:
            progress.update(1)
            if exc is not None and transformer.on_error == "raise":
                error = exc
                break
            if exc is not None:
                name = clip_name(i, exc)
                warnings.warn(f"skipping X[{i}] ({name}): {exc}", stacklevel=3)
                if result is not None:
                    result.skipped.append((i, name, str(exc)))
                    result.keys.append(None)
                continue
            if result is not None:
                result.keys.append(clip[0])
            yield from batcher.add(i, *clip)
        yield from batcher.close()  # also after a bad input: the finished batches are committed
    finally:
        progress.close()
    if error is not None:
        raise error


def _load_clips(transformer, pairs: list, store: TokenStore | None) -> list[tuple]:
    """Decode, key, crop and resample a chunk of inputs (runs in a read-ahead thread).

    One ``(value, None)`` or ``(None, exc)`` per ``(index, item)``; a value is
    ``(key, waveform, name)``. The chunk's keys are looked up in the store's
    index at once, and a clip the store already holds is not resampled: its
    waveform comes back as None.
    """
    decoded: list = []
    for i, item in pairs:
        try:
            wav, rate, name = decode_clip(item, i, transformer.sample_rate)
            key = clip_key(wav, rate) if store is not None else None
            # a chunk waits for its index lookup: keep only what prepare_clip reads of a long recording
            decoded.append((key, clip_head(wav, rate, transformer.clip_seconds_), rate, name))
        except Exception as exc:  # handed to the consumer with its index
            decoded.append(exc)
    keys = [d[0] for d in decoded if not isinstance(d, Exception)]
    stored = iter(store.loaded_mask(keys) if store is not None else np.zeros(len(keys), dtype=bool))
    out = []
    for d in decoded:
        if isinstance(d, Exception):
            out.append((None, d))
            continue
        key, wav, rate, name = d
        if next(stored):
            out.append(((key, None, name), None))
            continue
        try:
            out.append(((key, prepare_clip(wav, rate, clip_seconds=transformer.clip_seconds_,
                                           encoder_rate=transformer.encoder_sample_rate_,
                                           n_samples=transformer.n_samples_), name), None))
        except Exception as exc:
            out.append((None, exc))
    return out


def _forward(transformer, layers: LayerForward, wav: torch.Tensor, compute: torch.dtype) -> torch.Tensor:
    """Token maps ``(B, n_layers, n_tokens, dim)`` in float32 from ``layers(wav)`` (the encoder's
    ``forward_layers`` at the fitted layers, eager or compiled), checked against the fitted layout."""
    with torch.inference_mode(), torch.autocast(wav.device.type, dtype=compute, enabled=compute != torch.float32):
        maps = layers(wav)
    expected = (wav.shape[0], transformer.n_tokens_, transformer.dim_)
    for layer, tokens in zip(transformer.layers_, maps):
        if tuple(tokens.shape) != expected:
            raise RuntimeError(
                f"encoder {transformer.encoder_spec_.name!r} layer {layer} returned tokens of shape "
                f"{tuple(tokens.shape)}, but its layout promises {expected}"
            )
    return torch.stack([t.float() for t in maps], dim=1)
