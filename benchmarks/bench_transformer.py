"""Token extraction speed: FrozenEncoderTransformer against the bare encoder module.

Both run the same encoder on the same clips in the same batches: the bare
variant calls ``module.forward_layers`` on ready-made tensors under
``torch.inference_mode``; the transformer takes the clips as a list of numpy
waveforms and does everything a user gets (validation, cropping/padding,
batching, device transfer, output assembly). Prints clips/s for both and the
ratio ``bare time / transformer time`` (target >= 0.9 on CPU). No token cache.

Usage::

    python benchmarks/bench_transformer.py                         # YAMNet if fetched, else tiny-vit
    python benchmarks/bench_transformer.py --encoder eat --random-weights --clips 16   # ViT-B, 10 s
    python benchmarks/bench_transformer.py --encoder eat --random-weights --device cuda --clips 2048 --batch-size 256
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from skprobe import FrozenEncoderTransformer
from skprobe.encoders import find_weights, get_encoder_spec, load_encoder
from skprobe.extraction.transformer import clear_encoder_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default=None, help="registered name (default: yamnet if fetched, else tiny-vit)")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--random-weights", action="store_true",
                        help="random initialisation instead of a checkpoint (speed does not depend on the weights)")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    name = args.encoder or ("yamnet" if find_weights("yamnet") is not None else "tiny-vit")
    spec = get_encoder_spec(name)
    if args.random_weights:
        spec = dataclasses.replace(spec, name=f"{spec.name}-random", requires_checkpoint=False,
                                   packaged_weights=None)
    device = torch.device(args.device)

    transformer = FrozenEncoderTransformer(encoder=spec, checkpoint=args.checkpoint, batch_size=args.batch_size,
                                           device=args.device)
    n = int(round(spec.clip_seconds * spec.sample_rate))
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
                torch.stack([m.float() for m in maps], dim=1).cpu()

    def wrapped() -> None:
        transformer.transform(clips)

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    wrapped(), bare()  # warm-up: weights loaded, kernels chosen
    t_wrapped = min(timed(wrapped) for _ in range(args.repeats))
    t_bare = min(timed(bare) for _ in range(args.repeats))
    print(f"{spec.name} on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"{torch.get_num_threads()} threads), {args.clips} clips of {spec.clip_seconds:g} s, batch {args.batch_size}, "
          f"compute {compute}, tokens {transformer.n_tokens_} x {transformer.dim_}")
    print(f"bare module:  {t_bare:8.3f} s  {args.clips / t_bare:10.1f} clips/s")
    print(f"transformer:  {t_wrapped:8.3f} s  {args.clips / t_wrapped:10.1f} clips/s")
    print(f"ratio (bare / transformer time): {t_bare / t_wrapped:.3f}")


if __name__ == "__main__":
    main()
