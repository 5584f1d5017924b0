"""Token extraction speed: FrozenEncoderTransformer against the bare encoder module, the store, files.

All variants run in one process on the same clips in the same batches, so
their ratios are comparable even on a shared machine:

- ``bare``: ``module.forward_layers`` on ready-made tensors under
  ``torch.inference_mode``, tokens copied to the host (on CUDA: cast to
  bfloat16 on the device and copied into pinned memory, the issue's reference);
- ``transform``: a list of numpy waveforms through ``transform`` (validation,
  cropping, batching, device transfer, output assembly), no store;
- ``store write``: the same into an empty token store (``store=``, float16);
- ``store read``: the second call, every clip stored, ``output="memmap"``
  (clip keys hashed, index looked up, no forward, no token copy);
- ``files``: the clips as 16-bit WAV and FLAC files at 44.1 kHz stereo
  (decoding, down-mixing and resampling in read-ahead threads) vs ``arrays``;
- ``--compile [MODE]``: ``compile=True`` or ``compile=MODE`` (``torch.compile``) for the bare forward and
  ``transform``, after a first call that compiles (timed on its own).

Usage::

    python benchmarks/bench_transformer.py                         # YAMNet if fetched, else tiny-vit
    python benchmarks/bench_transformer.py --encoder eat --random-weights --clips 16 --batch-size 8
    python benchmarks/bench_transformer.py --encoder eat --random-weights --device cuda --clips 4096 --batch-size 256
    python benchmarks/bench_transformer.py --encoder tiny-vit --clips 64 --batch-size 16 --skip-files --compile
    python benchmarks/bench_transformer.py --encoder tiny-vit --clip-seconds 10 --clips 1000 --batch-size 64 --skip-files
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from skprobe import FrozenEncoderTransformer
from skprobe.encoders import find_weights, get_encoder_spec, load_encoder
from skprobe.extraction.compiled import compiled_forward
from skprobe.extraction.transformer import clear_encoder_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default=None, help="registered name (default: yamnet if fetched, else tiny-vit)")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--random-weights", action="store_true",
                        help="random initialisation instead of a checkpoint (speed does not depend on the weights)")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--clip-seconds", type=float, default=None, help="clip length (default: the encoder's)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-jobs", type=int, default=None, help="read-ahead threads (default min(4, cores))")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-files", action="store_true", help="skip the WAV/FLAC part")
    parser.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                        help="also time compile=True or compile=MODE (torch.compile) for the bare module and transform")
    args = parser.parse_args()
    name = args.encoder or ("yamnet" if find_weights("yamnet") is not None else "tiny-vit")
    spec = get_encoder_spec(name)
    if args.random_weights:
        spec = dataclasses.replace(spec, name=f"{spec.name}-random", requires_checkpoint=False,
                                   packaged_weights=None)
    device = torch.device(args.device)
    seconds = args.clip_seconds or spec.clip_seconds
    params = dict(encoder=spec, checkpoint=args.checkpoint, batch_size=args.batch_size, device=args.device,
                  n_jobs=args.n_jobs, clip_seconds=seconds)
    transformer = FrozenEncoderTransformer(**params)
    n = int(round(seconds * spec.sample_rate))
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.normal(size=n)).astype(np.float32) for _ in range(args.clips)]
    transformer.fit(clips[:1])
    layers = transformer.layers_
    compute = transformer._compute_dtype(device)

    clear_encoder_cache()
    module = load_encoder(spec, args.checkpoint).to(device)
    batches = [torch.from_numpy(np.stack(clips[i : i + args.batch_size])) for i in range(0, len(clips), args.batch_size)]

    def bare() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=compute, enabled=compute != torch.float32):
            for batch in batches:
                maps = module.forward_layers(batch.to(device), layers)
                tokens = torch.stack([m.float() for m in maps], dim=1)
                if device.type == "cuda":
                    host = torch.empty(tokens.shape, dtype=torch.bfloat16, pin_memory=True)
                    host.copy_(tokens.to(torch.bfloat16), non_blocking=True)
                else:
                    tokens.numpy()

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def best(fn) -> float:
        return min(timed(fn) for _ in range(args.repeats))

    transformer.transform(clips), bare()  # warm-up: weights loaded, kernels chosen
    t_wrapped = best(lambda: transformer.transform(clips))
    t_bare = best(bare)
    rows = [("bare module", t_bare), ("transform (arrays, no store)", t_wrapped)]
    if args.compile:
        rows += _compiled_rows(params, args.compile, clips, batches, device, compute, best, timed)

    with tempfile.TemporaryDirectory(prefix="skprobe-bench-") as tmp:
        stored = FrozenEncoderTransformer(**params, store=Path(tmp) / "store").fit(clips[:1])
        writes = []
        for r in range(args.repeats):  # a fresh store each time: every clip is written
            stored.set_params(store=Path(tmp) / f"store{r}", output="array")
            writes.append(timed(lambda: stored.transform(clips)))
        rows.append(("transform, writing the store", min(writes)))
        stored.set_params(output="memmap")
        rows.append(("2nd call, all stored, memmap output", best(lambda: stored.transform(clips))))

        if not args.skip_files:
            paths = _write_files(clips, Path(tmp) / "audio", spec.sample_rate)
            arrays44 = [sf.read(p, dtype="int16")[0] for p in paths]
            at44 = FrozenEncoderTransformer(**{**params, "sample_rate": 44100}).fit(arrays44[:1])
            rows.append(("arrays 44.1 kHz stereo int16", best(lambda: at44.transform(arrays44))))
            rows.append(("files (WAV/FLAC 16-bit 44.1 kHz stereo)", best(lambda: transformer.transform(paths))))

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{spec.name} on {device} ({device_name}, {torch.get_num_threads()} threads), {args.clips} clips of "
          f"{seconds:g} s, batch {args.batch_size}, compute {compute}, tokens "
          f"{transformer.n_tokens_} x {transformer.dim_}, read-ahead threads {args.n_jobs}")
    for label, seconds in rows:
        print(f"{label:42s} {seconds:8.3f} s {args.clips / seconds:10.1f} clips/s  ({t_bare / seconds:.2f} x bare)")


def _compiled_rows(params, compile, clips, batches, device, compute, best, timed) -> list[tuple[str, float]]:
    """compile=True or a mode: transform and the bare compiled forward, after a first call that compiles (printed).

    Both use the transformer's cached encoder module, so they share one compiled graph.
    """
    transformer = FrozenEncoderTransformer(**params, compile=compile).fit(clips[:1])
    first = timed(lambda: transformer.transform(clips[: params["batch_size"]]))
    forward = compiled_forward(transformer._load(device), transformer.layers_, params["batch_size"], mode=compile)

    def bare_compiled() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=compute, enabled=compute != torch.float32):
            for batch in batches:
                tokens = torch.stack([m.float() for m in forward(batch.to(device))], dim=1)
                if device.type == "cuda":
                    host = torch.empty(tokens.shape, dtype=torch.bfloat16, pin_memory=True)
                    host.copy_(tokens.to(torch.bfloat16), non_blocking=True)
                else:
                    tokens.numpy()

    print(f"compile={compile!r}: the first call ({params['batch_size']} clips) took {first:.1f} s (compilation included)")
    return [("bare module, compiled", best(bare_compiled)),
            (f"transform (arrays, no store), compile={compile!r}", best(lambda: transformer.transform(clips)))]


def _write_files(clips, folder: Path, rate: int) -> list[Path]:
    """Half WAV, half FLAC, 16-bit 44.1 kHz stereo versions of the clips."""
    from skprobe.audio import resample

    folder.mkdir(parents=True)
    paths = []
    for i, clip in enumerate(clips):
        up = resample(clip, rate, 44100)
        stereo = np.stack([up, 0.5 * up], axis=1)
        paths.append(folder / f"{i:05d}.{'wav' if i % 2 else 'flac'}")
        sf.write(paths[-1], (np.clip(stereo, -1, 1) * 32767).astype(np.int16), 44100, subtype="PCM_16")
    return paths


if __name__ == "__main__":
    main()
