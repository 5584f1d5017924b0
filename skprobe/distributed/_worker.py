"""What runs on a Dask worker: the per-worker transformer cache, the set-up check and the chunk task.

Everything here is called through the scheduler with small arguments (the
transformer's parameters, the store folder, a chunk of file paths) and returns
small summaries (counts, bytes, seconds); token arrays never leave the worker
except through the shared store.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

from ..extraction.transformer import FrozenEncoderTransformer

__all__ = ["check_worker", "extract_chunk", "worker_stats"]

_TRANSFORMERS: dict[str, FrozenEncoderTransformer] = {}
_STATS = {"transformers_built": 0, "clips_forwarded": 0, "chunks_done": 0, "malloc_tuned": False}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters of glibc's malloc.h


def _worker_identity(worker=None) -> tuple[str, object]:
    """This worker's address and name ('local process ...' outside a Dask worker)."""
    try:
        if worker is None:
            from distributed import get_worker

            worker = get_worker()
        return worker.address, worker.name
    except (ImportError, ValueError):
        return f"local process {socket.gethostname()}:{os.getpid()}", None


def _describe_worker(worker=None) -> str:
    address, name = _worker_identity(worker)
    return f"worker {address}" + (f" (name {name!r})" if name is not None else "")


def _worker_device(device: str, worker=None) -> str:
    """One GPU per worker: ``"auto"`` on a worker that sees several GPUs picks one by the worker's name.

    Workers started by dask-cuda (or with ``CUDA_VISIBLE_DEVICES`` set per worker) see one GPU
    and keep ``"auto"``; a LocalCluster on a multi-GPU machine names its workers 0, 1, ...
    """
    if device != "auto":
        return device
    import torch

    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    _, name = _worker_identity(worker)
    if n_gpus > 1 and isinstance(name, int):
        return f"cuda:{name % n_gpus}"
    return device


def _cache_key(params: dict) -> str:
    return json.dumps(sorted((k, repr(v)) for k, v in params.items()))


def tune_malloc_for_torch() -> bool:
    """Undo the ``MALLOC_TRIM_THRESHOLD_`` that Dask's nanny exports to its workers (glibc only).

    With that variable set, glibc keeps a fixed 128 KiB mmap threshold and
    returns freed memory at once, so every large temporary of a torch forward
    on the CPU is mapped and page-faulted anew in each batch. Raising the mmap
    and trim thresholds (32 and 64 MiB) from inside the worker fixes it
    wherever the worker was started (``LocalCluster``, dask-jobqueue,
    Kubernetes); the speeds with and without are on the distributed benchmark
    page (docs/benchmarks/distributed.md).
    Returns whether the thresholds were set.
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or _STATS["malloc_tuned"]:
        return _STATS["malloc_tuned"]
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        done = bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20))
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to undo
        done = False
    _STATS["malloc_tuned"] = done
    return done


def worker_transformer(params: dict) -> FrozenEncoderTransformer:
    """The fitted transformer of ``params`` on this worker, built once per worker process.

    Its encoder is loaded on the first chunk and kept (the transformer's in-process encoder
    cache), so every later chunk on this worker reuses the loaded weights.
    """
    tune_malloc_for_torch()
    key = _cache_key(params)
    transformer = _TRANSFORMERS.get(key)
    if transformer is None:
        local = dict(params, device=_worker_device(params.get("device", "auto")))
        transformer = FrozenEncoderTransformer(**local).fit(None)
        _TRANSFORMERS[key] = transformer
        _STATS["transformers_built"] += 1
    return transformer


def worker_stats() -> dict:
    """Counters of this worker process (for tests and reports)."""
    return dict(_STATS, transformers_cached=len(_TRANSFORMERS))


def check_worker(params: dict, store: str, dask_worker=None) -> dict:
    """Check that this worker can run the extraction: encoder, checkpoint, writable store.

    Returns a summary (worker, device, compute dtype, and ``store``: the token store's
    :class:`~skprobe.extraction.store.StoreDescription`, with the checkpoint hash this worker
    computed) or ``{"worker": ..., "error": message}`` naming the worker and the path at fault.
    """
    where = _describe_worker(dask_worker)
    try:
        from ..encoders.loading import resolve_checkpoint
        from ..encoders.registry import get_encoder_spec

        spec = get_encoder_spec(params.get("encoder", "yamnet"))
        resolve_checkpoint(spec, params.get("checkpoint"))
    except (FileNotFoundError, ValueError, KeyError) as exc:
        return {"worker": where, "error": f"{where}: {exc}"}
    folder = Path(store).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return {"worker": where, "error": f"{where} cannot write the token store folder {folder}: "
                                          f"{exc.strerror or exc}"}
    import torch

    from .._torch import resolve_device

    device = resolve_device(_worker_device(params.get("device", "auto"), dask_worker))
    try:
        store = FrozenEncoderTransformer(**dict(params, device=str(device))).fit(None).open_store()
    except (OSError, ValueError) as exc:  # e.g. an unreadable checkpoint
        return {"worker": where, "error": f"{where}: {exc}"}
    return {"worker": where, "device": str(device), "compute_dtype": store.config["compute_dtype"],
            "store": store.description,
            "store_folder": str(store.folder), "torch": torch.__version__}


def extract_chunk(params: dict, paths: list[str], chunk: int) -> dict:
    """Extract one chunk of files into the store named by ``params["store"]``; return a small summary.

    Clips already committed to the store run no forward pass. Batches are committed as they
    finish, so a worker that dies mid-chunk loses at most its batches in flight; the scheduler
    then reruns the chunk on another worker, which skips what was committed. The summary
    holds the clip keys (32 bytes each), counts and timings: no tokens.
    """
    start = time.perf_counter()
    try:
        transformer = worker_transformer(params)
        result = transformer.extract_to_store(paths)
    except (OSError, ValueError) as exc:
        message = f"{_describe_worker()}, chunk {chunk} (from {paths[0]}): {exc}"
        try:
            error = type(exc)(message)
        except TypeError:  # an exception class with a constructor of its own
            error = RuntimeError(message)
        raise error from exc
    _STATS["chunks_done"] += 1
    _STATS["clips_forwarded"] += result.n_forwarded
    address, _ = _worker_identity()
    row_bytes = 2 * len(transformer.layers_) * transformer.n_tokens_ * transformer.dim_  # float16 in the store
    return {"chunk": chunk, "worker": address, "n_clips": len(paths), "n_forwarded": int(result.n_forwarded),
            "keys": list(result.keys), "bytes_written": int(result.n_forwarded) * row_bytes,
            "seconds": time.perf_counter() - start}
