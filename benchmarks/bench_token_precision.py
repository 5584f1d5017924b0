"""Does storing tokens in float16 change probe results? Macro mAP with float32 vs float16 tokens.

Extracts the event scenes' YAMNet tokens once in float32 (no store), then
trains the default linear, attentive and prototypical probes on those tokens
and on the same tokens rounded to float16 (what the token store keeps), with
the same seeds, and prints the test macro mAP of each and the difference.

Usage::

    python benchmarks/bench_token_precision.py                 # YAMNet, event scenes, 3 seeds
    python benchmarks/bench_token_precision.py --encoder aisfx --seeds 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from skprobe import FrozenEncoderTransformer
from skprobe.benchmark import PROBES, BenchmarkConfig, class_scores, load_benchmark_data
from skprobe.metrics import macro_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="yamnet")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    config = BenchmarkConfig(encoder=args.encoder, device=args.device)
    data = load_benchmark_data(config)
    start = time.perf_counter()
    enc = FrozenEncoderTransformer(encoder=args.encoder, sample_rate=data.sample_rate, device=args.device)
    X_train = enc.fit_transform(list(data.X_train))
    X_test = enc.transform(list(data.X_test))
    print(f"{args.encoder}: {len(X_train)} train / {len(X_test)} test clips, tokens {X_train.shape[1:]}, "
          f"extracted in {time.perf_counter() - start:.0f} s")
    rounded = {name: x.astype(np.float16).astype(np.float32) for name, x in (("train", X_train), ("test", X_test))}
    print(f"max relative rounding error of the tokens: "
          f"{np.max(np.abs(rounded['train'] - X_train) / np.maximum(np.abs(X_train), 1e-6)):.2e}")
    print(f"{'probe':14s} {'float32':>9s} {'float16':>9s} {'diff':>8s}   (macro mAP, mean of {args.seeds} seeds)")
    for name, cls in PROBES.items():
        scores = {"float32": [], "float16": []}
        for seed in range(args.seeds):
            for kind, (tr, te) in (("float32", (X_train, X_test)), ("float16", (rounded["train"], rounded["test"]))):
                probe = cls(prefix_tokens=enc.prefix_tokens_, random_state=seed, device=args.device).fit(
                    tr, data.Y_train)
                scores[kind].append(macro_map(data.Y_test, class_scores(probe, te, len(data.class_names))))
        a, b = np.mean(scores["float32"]), np.mean(scores["float16"])
        print(f"{name:14s} {a:9.4f} {b:9.4f} {b - a:+8.4f}   per seed: {np.round(scores['float32'], 4).tolist()} vs "
              f"{np.round(scores['float16'], 4).tolist()}", flush=True)


if __name__ == "__main__":
    main()
