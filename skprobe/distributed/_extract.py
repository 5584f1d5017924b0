"""Token extraction across the workers of a Dask cluster into one shared token store."""

from __future__ import annotations

import os
import pickle
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path

import numpy as np

from ..extraction.store import StoreArray, StoreDescription
from ..extraction.transformer import FrozenEncoderTransformer
from . import _worker
from ._client import ClusterSetupError, cluster_client

__all__ = ["ExtractionReport", "extract", "list_audio_files"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".opus")


@dataclass
class ExtractionReport:
    """What a distributed extraction did (returned with ``return_report=True``).

    Attributes
    ----------
    n_clips : int
        Files in the request.
    n_forwarded : int
        Clips that ran an encoder forward pass on some worker (0 when every clip was already
        in the store). Clips of a chunk rerun after a worker died count once per run.
    n_chunks : int
    seconds : float
        Wall time from the first submitted chunk to the last result.
    bytes_written : int
        Token bytes the workers wrote to the store (float16).
    task_bytes : int
        Pickled size of every chunk description sent and every summary returned: the
        scheduler's share of the job.
    chunks_per_worker : dict
        Worker address -> chunks it completed.
    workers : dict
        Worker address -> set-up summary (device, compute dtype).
    """

    n_clips: int
    n_forwarded: int
    n_chunks: int
    seconds: float
    bytes_written: int
    task_bytes: int
    chunks_per_worker: dict = field(default_factory=dict)
    workers: dict = field(default_factory=dict)


def list_audio_files(folder: str | os.PathLike) -> list[str]:
    """Audio files below ``folder`` (recursively), sorted, as strings.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["b.wav", "a.flac", "notes.txt"]:
    ...     _ = (root / name).write_bytes(b"")
    >>> [pathlib.Path(p).name for p in list_audio_files(root)]
    ['a.flac', 'b.wav']
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"folder of audio files not found: {root}")
    return sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def _paths(X) -> list[str]:
    if isinstance(X, (str, os.PathLike)):
        paths = list_audio_files(X)
        if not paths:
            raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) below {X}")
        return paths
    paths = list(X)
    if not paths:
        raise ValueError("X is empty: pass audio file paths or a folder")
    for i, p in enumerate(paths):
        if not isinstance(p, (str, os.PathLike)):
            raise ValueError(
                f"X[{i}] is a {type(p).__name__}: distributed extraction takes audio file paths (each worker reads "
                "its files from a path it can reach), not waveforms; write the clips to files first"
            )
    return [os.fspath(p) for p in paths]


def _check_workers(client, params: dict, store: str) -> dict:
    info = client.scheduler_info()
    if not info.get("workers"):
        raise ClusterSetupError(f"the Dask cluster at {client.scheduler.address} has no workers")
    checks = client.run(_worker.check_worker, params, store)
    errors = [c["error"] for c in checks.values() if "error" in c]
    if errors:
        raise ClusterSetupError(errors[0] + (f" (and {len(errors) - 1} more workers)" if len(errors) > 1 else ""))
    dtypes = {c["compute_dtype"] for c in checks.values()}
    if len(dtypes) > 1:
        raise ClusterSetupError(
            f"the workers would compute in different dtypes ({', '.join(sorted(dtypes))}: GPU and CPU workers "
            "with dtype='auto'), which makes different tokens; pass dtype='float32' or 'bfloat16' explicitly"
        )
    folders = {}
    for c in checks.values():
        folders.setdefault(c["store_folder"], c["worker"])
    if len(folders) > 1:
        (a, wa), (b, wb) = list(folders.items())[:2]
        raise ClusterSetupError(
            f"{wa} and {wb} would write different token stores ({a} and {b}): their checkpoints differ in content "
            f"(checkpoint={params.get('checkpoint')!r}) or their skprobe versions differ"
        )
    return checks


def extract(X, store: str | os.PathLike, *, client=None, n_workers: int | None = None, chunk_size: int = 256,
            retries: int = 1, connect_timeout: float = 10.0, return_report: bool = False, verbose: int = 0,
            **transformer_params):
    """Extract token maps of many audio files on a Dask cluster into a shared token store.

    The files are split into chunks of ``chunk_size``; each worker extracts its chunks with
    a :class:`~skprobe.FrozenEncoderTransformer` that it builds (and whose encoder it loads)
    once, and commits the tokens batch by batch to ``store``. Only file paths and small
    summaries pass through the scheduler. A rerun skips clips already in the store; a worker
    that dies loses only its batch in flight, and its chunk is rerun on another worker.

    Parameters
    ----------
    X : folder or list of path-like
        Audio files every worker can read (a shared filesystem), or a folder searched
        recursively for audio files.
    store : path-like
        Token store folder every worker can write (the ``store`` of the transformer).
    client : distributed.Client, str or None
        The cluster: a client, a scheduler address (``"tcp://host:8786"``), or None for the
        current default client (or a new LocalCluster when ``n_workers`` is given).
    n_workers : int, optional
        Start a ``LocalCluster`` of this many single-threaded worker processes for the call.
    chunk_size : int, default=256
        Files per task: the unit of scheduling and of retry after a worker failure.
    retries : int, default=1
        Retries of a chunk whose task raised (a worker that dies is handled by the scheduler).
        A chunk that still fails is reported after every other chunk finished (and committed).
    connect_timeout : float, default=10
        Seconds to wait for a scheduler given by address.
    return_report : bool, default=False
        Also return an :class:`ExtractionReport`.
    verbose : int, default=0
        Print progress per finished chunk.
    **transformer_params
        ``output`` (``"memmap"``, the default, or ``"array"``) and the parameters of :class:`~skprobe.FrozenEncoderTransformer` (``encoder``, ``checkpoint``,
        ``layers``, ``clip_seconds``, ``batch_size``, ``device``, ``dtype``, ...). ``device="auto"``
        gives each worker one GPU where GPUs exist.

    Returns
    -------
    tokens : StoreArray or ndarray of shape (n_files, n_tokens, dim) or (n_files, n_layers, n_tokens, dim)
        What ``FrozenEncoderTransformer(store=store, output=output, **transformer_params).fit_transform(files)``
        returns on one machine: with the default ``output="memmap"`` a read-only, store-backed
        :class:`~skprobe.extraction.StoreArray` whose pickle holds only the store's description and
        the clip keys (so joblib and Dask ship it cheaply); with ``output="array"`` an ndarray in memory.
    report : ExtractionReport
        Only with ``return_report=True``.

    Raises
    ------
    ClusterSetupError
        Unreachable scheduler, or a worker that cannot read the checkpoint or write the
        store (the message names the worker and the path).

    Examples
    --------
    >>> import tempfile, numpy as np, soundfile as sf
    >>> from pathlib import Path
    >>> from skprobe.distributed import extract
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(4):
    ...     sf.write(folder / f"clip{i}.wav", np.full(16000, 0.01 * i, "float32"), 16000)
    >>> tokens = extract(folder, folder / "store", n_workers=1, encoder="tiny-vit")  # doctest: +SKIP
    >>> tokens.shape  # doctest: +SKIP
    (4, 97, 16)
    """
    output = transformer_params.pop("output", "memmap")
    if output not in ("memmap", "array"):
        raise ValueError(f"output must be 'memmap' or 'array', got {output!r}")
    if "cache" in transformer_params:
        raise ValueError("pass the token store as store=..., not cache=...")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    paths = _paths(X)
    store = os.fspath(Path(store).expanduser().absolute())
    params = dict(transformer_params, store=store)
    FrozenEncoderTransformer(**params)._validate_params()  # bad parameters fail here, not on every worker

    with cluster_client(client, n_workers=n_workers, connect_timeout=connect_timeout) as dask_client:
        checks = _check_workers(dask_client, params, store)
        chunks = [paths[i : i + chunk_size] for i in range(0, len(paths), chunk_size)]
        run = uuid.uuid4().hex[:8]
        start = time.perf_counter()
        futures = dask_client.map(_worker.extract_chunk, [params] * len(chunks), chunks, range(len(chunks)),
                                  key=[f"skprobe-extract-{run}-{i}" for i in range(len(chunks))],
                                  retries=retries, pure=False)
        summaries = []
        from distributed import as_completed

        errors = []
        for future in as_completed(futures):
            if future.status == "error":  # let the other chunks finish and commit, then raise
                errors.append(future)
                continue
            summary = future.result()
            summaries.append(summary)
            if verbose:
                done = sum(s["n_clips"] for s in summaries)
                print(f"chunk {summary['chunk']} on {summary['worker']}: {summary['n_forwarded']} forwarded; "
                      f"{done}/{len(paths)} files", flush=True)
        seconds = time.perf_counter() - start
        if errors:
            errors[0].result()  # raises the chunk's exception (the message names the worker and the file)

    task_bytes = sum(len(pickle.dumps((params, c, i))) for i, c in enumerate(chunks))
    task_bytes += sum(len(pickle.dumps(s)) for s in summaries)  # the keys are most of it: 32 bytes per clip
    report = ExtractionReport(
        n_clips=len(paths), n_forwarded=sum(s["n_forwarded"] for s in summaries), n_chunks=len(chunks),
        seconds=seconds, bytes_written=sum(s["bytes_written"] for s in summaries), task_bytes=task_bytes,
        chunks_per_worker=dict(Counter(s["worker"] for s in summaries)), workers=checks,
    )
    by_chunk = {s["chunk"]: s["keys"] for s in summaries}
    keys = [key for i in range(len(chunks)) for key in by_chunk[i] if key is not None]  # None: a skipped bad file
    tokens = _read_store(keys, next(iter(checks.values()))["store"], params, output)
    return (tokens, report) if return_report else tokens


def _read_store(keys: list[str], description: StoreDescription, params: dict, output: str):
    """The tokens of ``keys`` as the single-machine transformer returns them, from the store.

    The store is opened from the workers' description of it, so the driver needs neither the
    checkpoint nor the encoder.
    """
    tokens = StoreArray(description.open(), keys, squeeze_layer=isinstance(params.get("layers", -1), Integral))
    if output == "memmap":
        return tokens
    return np.asarray(tokens).astype(np.float16 if params.get("output_dtype") == "float16" else np.float32)
