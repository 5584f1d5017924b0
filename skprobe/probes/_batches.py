"""Batches of tokens on their way to the device: resident, streamed with prefetch, or padded for inference.

On a GPU the training tokens are copied to the device once when they fit in
the memory budget (:func:`upload`); otherwise every batch is gathered on the
host, copied into a pinned buffer by a background thread
(:class:`HostPrefetcher`) and sent with a non-blocking copy, so reading the
next batch overlaps the current step. On the CPU batches are gathered in the
training loop's thread (a second thread only competes for the cores).

Inference batches (:func:`inference_batches`) always have exactly
``batch_size`` rows, the last one padded with zeros: every clip is then
computed by the same kernels on a problem of the same shape wherever it sits
and whatever shares its batch, which keeps predictions on a subset equal to
the subset of the predictions (BLAS and cuBLAS choose their algorithm by
problem shape; a one-row problem, for instance, takes a matrix-vector path
that rounds differently).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from ._tokens import TokenSource

__all__ = ["HostPrefetcher", "NonFiniteTokens", "batch_logits", "exact_float32", "inference_batches", "upload"]

_END = object()


class _Stopped(Exception):
    """The consumer stopped iterating: the reader thread ends."""


class HostPrefetcher:
    """Gather batches of clips on the host in a background thread, ``depth`` batches ahead.

    With ``device`` a CUDA device the batches are gathered straight into
    reused pinned buffers and arrive on the device through non-blocking
    copies on a side stream, queued one batch ahead; a buffer is reused only
    after the copy out of it has completed (a CUDA event).

    Parameters
    ----------
    source : TokenSource
    index_batches : iterable of int arrays
        Clip indices of each batch, in order.
    device : torch.device
    depth : int, default=2
        Batches read ahead.
    pad_to : int, optional
        Pad every batch with zero clips to this many rows.

    Examples
    --------
    >>> import numpy as np
    >>> source = TokenSource(np.arange(12, dtype=np.float32).reshape(6, 1, 2))
    >>> [b[:, 0, 0].tolist() for b in HostPrefetcher(source, [np.array([0, 1]), np.array([5])], torch.device("cpu"))]
    [[0.0, 2.0], [10.0]]
    """

    def __init__(self, source: TokenSource, index_batches: Iterable[np.ndarray], device: torch.device,
                 depth: int = 2, pad_to: int | None = None) -> None:
        self.source, self.device, self.pad_to = source, device, pad_to
        self.index_batches = index_batches
        self.pin = device.type == "cuda"
        self._ready: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._free: queue.Queue = queue.Queue()
        self._n_buffers, self._max_buffers = 0, max(1, depth) + 2
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="skprobe-prefetch", daemon=True)

    def _buffer(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if self._free.empty() and self._n_buffers < self._max_buffers:
            self._n_buffers += 1
            return torch.empty(shape, dtype=dtype).pin_memory()
        while True:  # wait for a buffer the consumer is done with, unless the consumer has stopped
            try:
                buffer, event = self._free.get(timeout=0.1)
                break
            except queue.Empty:
                if self._stop.is_set():
                    raise _Stopped from None
        if event is not None:
            event.synchronize()  # the copy out of this buffer has finished
        return buffer

    def _host_batch(self, idx: np.ndarray) -> torch.Tensor:
        if not self.pin:
            rows = torch.from_numpy(self.source.take(idx))
            return rows if self.pad_to is None else _pad(rows, self.pad_to)
        full = (max(len(idx), self.pad_to or 0), *self.source.shape[1:])
        buffer = self._buffer(full, self.source.dtype)
        if buffer.shape[0] < full[0] or buffer.shape[1:] != full[1:]:
            buffer = torch.empty(full, dtype=self.source.dtype).pin_memory()
        out = buffer[: full[0]]
        self.source.take_into(idx, out[: len(idx)])  # straight into pinned memory
        if full[0] > len(idx):
            out[len(idx) :].zero_()
        return out

    def _produce(self) -> None:
        try:
            for idx in self.index_batches:
                batch = self._host_batch(idx)
                while not self._stop.is_set():
                    try:
                        self._ready.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._ready.put(_END)
        except _Stopped:
            return
        except BaseException as exc:  # re-raised in the consumer's thread
            self._ready.put(exc)

    def __iter__(self) -> Iterator[torch.Tensor]:
        self._thread.start()
        # On CUDA each batch's copy is queued on a side stream one batch ahead of its use, so it runs while
        # the device computes on the previous batch; the compute stream waits for it by an event.
        copy_stream = torch.cuda.Stream(self.device) if self.pin else None
        pending = None
        try:
            while True:
                item = self._ready.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                if not self.pin:
                    yield item
                    continue
                launched = self._launch(item, copy_stream)
                if pending is not None:
                    yield self._hand_over(*pending)
                pending = launched
            if pending is not None:
                yield self._hand_over(*pending)
        finally:
            self._stop.set()
            while self._thread.is_alive():
                try:
                    self._ready.get(timeout=0.1)
                except queue.Empty:
                    pass

    def _launch(self, item: torch.Tensor, stream: torch.cuda.Stream) -> tuple[torch.Tensor, torch.cuda.Event]:
        """Queue the copy of a pinned batch to the device on ``stream``; its buffer is free once it is done."""
        with torch.cuda.stream(stream):
            on_device = item.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(stream)
        self._free.put((item if item._base is None else item._base, done))
        return on_device, done

    def _hand_over(self, on_device: torch.Tensor, done: torch.cuda.Event) -> torch.Tensor:
        """The batch for use on the current stream, which first waits for its copy."""
        current = torch.cuda.current_stream(self.device)
        current.wait_event(done)
        on_device.record_stream(current)  # the allocator must not reuse it before the compute stream is done
        return on_device


def inference_batches(source: TokenSource, batch_size: int, device: torch.device,
                      depth: int = 2) -> Iterator[tuple[int, torch.Tensor]]:
    """``(n_real, batch)`` over ``source`` in order, every batch padded to ``batch_size`` rows."""
    starts = range(0, len(source), batch_size)
    index_batches = (np.arange(s, min(len(source), s + batch_size)) for s in starts)
    counts = (min(len(source), s + batch_size) - s for s in starts)
    if device.type == "cuda":
        batches: Iterable[torch.Tensor] = HostPrefetcher(source, index_batches, device, depth, pad_to=batch_size)
    else:
        batches = (_pad(torch.from_numpy(source.take(idx)), batch_size) for idx in index_batches)
    yield from zip(counts, batches)


@torch.no_grad()
def batch_logits(network: torch.nn.Module, source: TokenSource, resident: torch.Tensor | None, batch_size: int,
                 device: torch.device) -> np.ndarray:
    """``network``'s float32 outputs on every clip of ``source`` (or of ``resident``, the same clips on
    ``device``), in order, in batches of ``batch_size`` clips.

    >>> import numpy as np, torch
    >>> source = TokenSource(np.ones((5, 2, 3), dtype=np.float32))
    >>> batch_logits(torch.nn.Flatten(), source, None, 4, torch.device("cpu")).shape
    (5, 6)
    """
    if resident is not None:
        batches: Iterable[tuple[int, torch.Tensor]] = ((len(batch), batch) for batch in resident.split(batch_size))
    else:
        batches = inference_batches(source, batch_size, device)
    return torch.cat([network(batch.to(device))[:n].float().cpu() for n, batch in batches]).numpy()


def _pad(rows: torch.Tensor, n: int) -> torch.Tensor:
    if len(rows) >= n:
        return rows
    return torch.cat([rows, rows.new_zeros((n - len(rows), *rows.shape[1:]))])


class NonFiniteTokens(Exception):
    """Raised by :func:`upload` with ``check_finite=True``: a chunk holds NaN or infinity."""


def upload(source: TokenSource, device: torch.device, dtype: torch.dtype,
           check_finite: bool = False) -> torch.Tensor | None:
    """All clips of ``source`` on ``device`` as ``dtype``, copied chunk by chunk.

    Returns None when a value does not survive the cast (float32 tokens beyond
    the float16 range): the caller then streams the float32 tokens instead.
    With ``check_finite`` every chunk is checked for NaN and infinity on the
    device before the cast (the validation pass of ``fit`` then costs no CPU
    pass); a bad chunk raises :class:`NonFiniteTokens`.
    """
    out = torch.empty(source.shape, dtype=dtype, device=device)
    start = 0
    for chunk in source.tensor_chunks():
        part = chunk.to(device, non_blocking=False)
        if check_finite and not bool(torch.isfinite(part).all()):
            del out
            raise NonFiniteTokens
        part = part.to(dtype)
        if dtype == torch.float16 and chunk.dtype != torch.float16 and not torch.isfinite(part).all():
            del out
            return None
        out[start : start + len(part)] = part
        start += len(part)
    return out


@contextlib.contextmanager
def exact_float32(device: torch.device):
    """Full float32 matrix products on CUDA (no TF32) for the duration, restored afterwards."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
