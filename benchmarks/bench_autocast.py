"""Quality and fit time with and without bfloat16 autocast on CUDA, on saved event-scene tokens.

``autocast_bf16`` (``skprobe.probes.training_options``) runs the heads'
training forward pass under bfloat16 autocast. This benchmark fits the three
probes with their defaults, 3 seeds each, with and without it, on the same
tokens, and prints the macro mAP on the test clips (the README table's
metric) and the fit time. With ``--cpu`` (or without a GPU) it fits on the
CPU too, to check the GPU's numbers against the CPU's.

The tokens are the README benchmark's (YAMNet on the event scenes), saved once
with ``--save`` on a machine that has them in its data home::

    python benchmarks/bench_autocast.py --save .gpu/event_scenes_yamnet.npz   # any machine
    python benchmarks/bench_autocast.py .gpu/event_scenes_yamnet.npz          # the GPU machine
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from skprobe import AttentiveProbeClassifier, LinearProbeClassifier, PrototypicalProbeClassifier
from skprobe.metrics import macro_map
from skprobe.probes import training_options

PROBES = {"linear": LinearProbeClassifier, "attentive": AttentiveProbeClassifier,
          "prototypical": PrototypicalProbeClassifier}


def save(path: str) -> None:
    from skprobe.benchmark import BenchmarkConfig, extract_tokens, load_benchmark_data

    config = BenchmarkConfig(verbose=0, device="cpu")
    data = load_benchmark_data(config)
    X_train, X_test, encoder = extract_tokens(config, data)
    np.savez_compressed(path, X_train=X_train.astype(np.float16), X_test=X_test.astype(np.float16),
                        Y_train=np.asarray(data.Y_train), Y_test=np.asarray(data.Y_test),
                        prefix_tokens=encoder.prefix_tokens_)
    print(f"saved {X_train.shape} + {X_test.shape} tokens to {path}")


def run(path: str, seeds: int, devices: list[tuple[str, bool]]) -> None:
    data = np.load(path)
    X_train, X_test = data["X_train"], data["X_test"]
    Y_train, Y_test = data["Y_train"], data["Y_test"]
    print(f"tokens {X_train.shape} train / {X_test.shape} test, {Y_train.shape[1]} classes, {seeds} seeds")
    print(f"{'probe':<14}{'device':<8}{'autocast':<10}{'macro mAP':>20}{'fit s':>8}")
    for name, Probe in PROBES.items():
        for device, autocast in devices:
            scores, seconds = [], []
            for seed in range(seeds):
                probe = Probe(prefix_tokens=int(data["prefix_tokens"]), random_state=seed, device=device)
                with training_options(autocast_bf16=autocast):
                    start = time.perf_counter()
                    probe.fit(X_train, Y_train)
                    seconds.append(time.perf_counter() - start)
                scores.append(macro_map(Y_test, probe.decision_function(X_test)))
            print(f"{name:<14}{device:<8}{'bf16' if autocast else 'off':<10}"
                  f"{np.mean(scores):>12.4f} ± {np.std(scores):.4f}{np.mean(seconds):>8.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tokens", nargs="?", help="saved tokens (.npz)")
    parser.add_argument("--save", metavar="PATH", help="save the README benchmark's tokens to PATH and exit")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cpu", action="store_true", help="also fit on the CPU (slow: minutes)")
    args = parser.parse_args()
    if args.save:
        return save(args.save)
    if not args.tokens:
        parser.error("give the saved tokens, or --save PATH")
    import torch

    devices = [("cuda", False), ("cuda", True)] if torch.cuda.is_available() else []
    if args.cpu or not devices:
        devices.insert(0, ("cpu", False))
    run(args.tokens, args.seeds, devices)


if __name__ == "__main__":
    main()
