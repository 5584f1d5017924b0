"""Distributed extraction: 1 Dask worker against 2, in one run, and the bytes through the scheduler.

Writes N short WAV files (synthetic: noise plus a few tones, 16 kHz mono) to a
temporary folder, then extracts them with ``skprobe.distributed.extract`` on a
``LocalCluster`` of 1 worker and on one of 2 workers (one thread each, a fresh
token store each time, so every clip runs a forward pass). Each cluster first
warms up (every worker loads the encoder on one scratch file), so the timed
run measures extraction, not start-up. Prints clips/s of both, their ratio, and
the scheduler's traffic during the timed run: bytes of the batched streams
client -> scheduler, scheduler -> workers and clients, and workers -> scheduler
(task descriptions and state messages), next to the token bytes the workers
wrote to the store.

Usage::

    python benchmarks/bench_distributed.py                      # YAMNet, 1000 files of 2 s
    python benchmarks/bench_distributed.py --encoder tiny-vit --files 200 --clip-seconds 1
    # GPU: one GPU worker against the same extraction in one process (the cluster's overhead):
    python benchmarks/bench_distributed.py --encoder eat --random-weights --files 4096 --clip-seconds 10 \\
        --batch-size 256 --chunk-size 1024 --device auto --workers 1 --single
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from distributed import Client, LocalCluster

from skprobe.distributed import _worker, extract
from skprobe.encoders import get_encoder_spec


def write_files(folder: Path, n: int, seconds: float, rate: int = 16000) -> list[str]:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    paths = []
    for i in range(n):
        wav = 0.05 * rng.standard_normal(t.size)
        for f in rng.uniform(100, 4000, size=3):
            wav += 0.1 * np.sin(2 * np.pi * f * t)
        paths.append(str(folder / f"clip{i:05d}.wav"))
        sf.write(paths[-1], wav.astype(np.float32), rate, subtype="PCM_16")
    return paths


def _scheduler_bytes(dask_scheduler) -> int:
    comms = list(dask_scheduler.stream_comms.values()) + list(dask_scheduler.client_comms.values())
    return sum(c.byte_count for c in comms)


def _worker_bytes(dask_worker) -> int:
    return dask_worker.batched_stream.byte_count


def _warm_up(params: dict, path: str) -> None:
    _worker.worker_transformer(params).extract_to_store([path])


def traffic(client) -> dict:
    return {"client -> scheduler": client.scheduler_comm.byte_count,
            "scheduler -> workers/clients": client.run_on_scheduler(_scheduler_bytes),
            "workers -> scheduler": sum(client.run(_worker_bytes).values())}


def run(n_workers: int, paths: list[str], root: Path, params: dict, chunk_size: int) -> dict:
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        scratch = dict(params, store=str(root / f"scratch-{n_workers}"))
        client.run(_warm_up, scratch, paths[0])
        before = traffic(client)
        start = time.perf_counter()
        _, report = extract(paths, root / f"store-{n_workers}", client=client, chunk_size=chunk_size,
                            return_report=True, **params)
        wall = time.perf_counter() - start
        after = traffic(client)
    sent = {k: after[k] - before[k] for k in after}
    return {"workers": n_workers, "seconds": report.seconds, "wall": wall, "clips_per_s": len(paths) / report.seconds,
            "forwarded": report.n_forwarded, "token_bytes": report.bytes_written, "task_bytes": report.task_bytes,
            "scheduler_bytes": sent, "chunks": report.chunks_per_worker}


def single_process(paths: list[str], root: Path, params: dict) -> dict:
    """The same extraction in this process, without Dask (torch's default threads), after a warm-up."""
    from skprobe import FrozenEncoderTransformer

    FrozenEncoderTransformer(**params, store=str(root / "scratch-single")).fit(None).extract_to_store(paths[:1])
    transformer = FrozenEncoderTransformer(**params, store=str(root / "store-single")).fit(None)
    start = time.perf_counter()
    result = transformer.extract_to_store(paths)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "clips_per_s": len(paths) / seconds, "forwarded": result.n_forwarded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="yamnet")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--random-weights", action="store_true",
                        help="random initialisation instead of a checkpoint (speed does not depend on the weights)")
    parser.add_argument("--single", action="store_true", help="also time the extraction in one process without Dask")
    args = parser.parse_args()
    encoder = args.encoder
    if args.random_weights:  # the spec itself goes to the workers (its builder is importable there)
        spec = get_encoder_spec(args.encoder)
        encoder = dataclasses.replace(spec, name=f"{spec.name}-random", requires_checkpoint=False,
                                      packaged_weights=None)
    params = {"encoder": encoder, "clip_seconds": args.clip_seconds, "batch_size": args.batch_size,
              "device": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "clips").mkdir()
        paths = write_files(root / "clips", args.files, args.clip_seconds)
        results = [run(n, paths, root, params, args.chunk_size) for n in args.workers]
        single = single_process(paths, root, params) if args.single else None
    print(f"{args.encoder}, {args.files} files of {args.clip_seconds:g} s, batch {args.batch_size}, "
          f"chunks of {args.chunk_size}, device {args.device}")
    for r in results:
        total = sum(r["scheduler_bytes"].values())
        print(f"{r['workers']} worker(s): {r['seconds']:.1f} s, {r['clips_per_s']:.1f} clips/s "
              f"({r['forwarded']} forwarded, chunks per worker {sorted(r['chunks'].values())}); "
              f"scheduler streams {total / 1e3:.1f} kB {r['scheduler_bytes']}; chunk descriptions + summaries "
              f"{r['task_bytes'] / 1e3:.1f} kB; tokens written {r['token_bytes'] / 1e6:.1f} MB")
    if single is not None:
        import torch

        print(f"single process, no Dask ({torch.get_num_threads()} torch threads): {single['seconds']:.1f} s, "
              f"{single['clips_per_s']:.1f} clips/s; {results[0]['workers']} worker(s) / single: "
              f"{results[0]['clips_per_s'] / single['clips_per_s']:.2f}x")
    if len(results) > 1:
        print(f"speed-up {results[-1]['workers']} vs {results[0]['workers']} worker(s): "
              f"{results[-1]['clips_per_s'] / results[0]['clips_per_s']:.2f}x")


if __name__ == "__main__":
    main()
