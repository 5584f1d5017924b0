"""Streaming pieces of the extraction: bounded read-ahead of decoded clips, overlapped device copies.

Memory stays O(batch size x read-ahead depth): inputs are pulled from any
iterable as workers free up, never listed in full.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["read_ahead", "read_ahead_chunks", "DeviceRunner"]


def read_ahead(items: Iterable, work: Callable, *, n_workers: int, depth: int) -> Iterator:
    """``work(i, item)`` for every item, in order, computed up to ``depth`` items ahead by threads.

    Each result is ``(i, value, None)`` or ``(i, None, exc)`` when ``work``
    raised: errors are handed to the consumer in order instead of ending the
    stream, so it can decide to stop or skip.

    Threads, not processes: decoding (libsndfile), resampling (torch) and
    hashing (hashlib) release the GIL, and a process pool would pickle every
    waveform back to the parent (see docs/benchmarks/extraction.md).

    Examples
    --------
    >>> list(read_ahead("abc", lambda i, x: x.upper(), n_workers=2, depth=2))
    [(0, 'A', None), (1, 'B', None), (2, 'C', None)]
    """

    def work_chunk(pairs):
        out = []
        for i, item in pairs:
            try:
                out.append((work(i, item), None))
            except Exception as exc:  # handed to the consumer with its index
                out.append((None, exc))
        return out

    return read_ahead_chunks(items, work_chunk, n_workers=n_workers, depth=depth, chunk=1)


def read_ahead_chunks(items: Iterable, work_chunk: Callable, *, n_workers: int, depth: int,
                      chunk: int) -> Iterator:
    """:func:`read_ahead` with the work handed out ``chunk`` items at a time.

    ``work_chunk([(i, item), ...])`` returns one ``(value, None)`` or
    ``(None, exc)`` per item, in order; the results come out one item at a
    time, as from :func:`read_ahead`. A chunk costs one task instead of
    ``chunk``, and lets ``work_chunk`` do per-item steps for all its items
    at once (the token store's index looks up a chunk's keys in one call).
    At most about ``depth`` items are in flight (whole chunks).

    Examples
    --------
    >>> upper = lambda pairs: [(x.upper(), None) for _, x in pairs]
    >>> list(read_ahead_chunks("abcde", upper, n_workers=2, depth=4, chunk=2))[-2:]
    [(3, 'D', None), (4, 'E', None)]
    """
    numbered = enumerate(items)

    def next_chunk() -> list:
        return list(itertools.islice(numbered, chunk))

    def run(pairs: list) -> list:
        results = work_chunk(pairs)
        if len(results) != len(pairs):
            raise RuntimeError(f"work_chunk returned {len(results)} results for {len(pairs)} items")
        return [(i, value, exc) for (i, _), (value, exc) in zip(pairs, results)]

    if n_workers <= 0:
        while pairs := next_chunk():
            yield from run(pairs)
        return
    with ThreadPoolExecutor(n_workers, thread_name_prefix="skprobe-decode") as pool:
        queue: collections.deque[Future] = collections.deque()
        try:
            for _ in range(max(1, depth // chunk)):
                pairs = next_chunk()
                if not pairs:
                    break
                queue.append(pool.submit(run, pairs))
            while queue:
                results = queue.popleft().result()
                pairs = next_chunk()
                if pairs:
                    queue.append(pool.submit(run, pairs))
                yield from results
        finally:
            for future in queue:
                future.cancel()


class DeviceRunner:
    """Runs batches on a device with host<->device copies overlapped with compute.

    On CUDA the input batch is staged in pinned host memory and copied
    asynchronously; the output is cast on the device to ``out_dtype`` and copied
    into a pinned host buffer while the next batch is computed: results come
    back one batch late (``submit`` returns the previous batch, ``flush`` the
    last). On the CPU there is no extra copy and results come back at once.

    Parameters
    ----------
    forward : callable
        ``forward(wav_tensor) -> tokens tensor (batch, ...)`` on the device.
    device : torch.device
    out_dtype : torch.dtype
        dtype of the host copy (float16 for the store, float32 otherwise).
    """

    def __init__(self, forward: Callable, device: torch.device, out_dtype: torch.dtype) -> None:
        self.forward = forward
        self.device = device
        self.out_dtype = out_dtype
        self.cuda = device.type == "cuda"
        self._pending = None
        self._n = 0
        # Two pinned buffers each way, reused: allocating pinned memory per batch costs more than the copy.
        self._inputs: list = [None, None]
        self._outputs: list = [None, None]

    @staticmethod
    def _pinned(slots: list, i: int, shape, dtype: torch.dtype) -> torch.Tensor:
        buf = slots[i]
        if buf is None or buf[0].shape != torch.Size(shape) or buf[0].dtype != dtype:
            slots[i] = buf = (torch.empty(shape, dtype=dtype, pin_memory=True), None)
        elif buf[1] is not None:
            buf[1].synchronize()  # the copy that last used this buffer is done
        return buf[0]

    def submit(self, meta, wav: np.ndarray):
        """Start a batch; returns ``(meta, tokens, finite, fits)`` of the previous batch (or None).

        On CUDA ``tokens`` is a view of a pinned buffer that the next call but
        one overwrites: copy what you keep.
        """
        if not self.cuda:
            tokens, finite, fits = self._compute(torch.from_numpy(wav))
            return meta, tokens.numpy(), finite.numpy(), fits.numpy()
        slot = self._n % 2
        self._n += 1
        staged = self._pinned(self._inputs, slot, wav.shape, torch.float32)
        staged.numpy()[...] = wav
        on_device = staged.to(self.device, non_blocking=True)
        copied_in = torch.cuda.Event()
        copied_in.record()
        self._inputs[slot] = (staged, copied_in)
        tokens, finite, fits = self._compute(on_device)
        host = self._pinned(self._outputs, slot, tokens.shape, tokens.dtype)
        flags = torch.empty((2, tokens.shape[0]), dtype=torch.bool, pin_memory=True)
        host.copy_(tokens, non_blocking=True)
        flags.copy_(torch.stack([finite, fits]), non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._outputs[slot] = (host, event)
        previous, self._pending = self._pending, (meta, host, flags, event)
        return self._finish(previous)

    def flush(self):
        """The last batch's result (CUDA), or None."""
        previous, self._pending = self._pending, None
        return self._finish(previous)

    @staticmethod
    def _finish(pending):
        if pending is None:
            return None
        meta, host, flags, event = pending
        event.synchronize()
        return meta, host.numpy(), flags[0].numpy(), flags[1].numpy()

    def _compute(self, wav: torch.Tensor):
        tokens = self.forward(wav)
        finite = torch.isfinite(tokens).flatten(1).all(1)
        cast = tokens.to(self.out_dtype)
        fits = torch.isfinite(cast).flatten(1).all(1) | ~finite
        return cast, finite, fits
