"""Probe training speed: skprobe's ``fit`` against a bare torch loop on the same module.

For each probe, the same head (same initialisation), the same tokens, batch
size, optimiser (AdamW with the same parameter groups), cosine schedule and
loss are trained once through ``Probe.fit`` (validation, skorch loop, fitted
attributes included) and once by a minimal hand-written loop. Prints samples/s
for both and the ratio ``bare time / fit time`` (1.0 = no overhead; target >= 0.8).

Usage::

    python benchmarks/bench_probe_training.py                      # CPU default size
    python benchmarks/bench_probe_training.py --gpu-size --device cuda   # 256 x 512 x 768, 100 classes
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from skprobe import AttentiveProbeClassifier, LinearProbeClassifier, PrototypicalProbeClassifier
from skprobe.probes.base import ProbeNetwork
from skprobe.probes.losses import make_loss


def bare_loop(network, X, Y, *, epochs, batch_size, lr, weight_decay, no_decay, device, seed):
    """The reference: the same optimisation written directly in torch."""
    torch.manual_seed(seed)
    network = network.to(device)
    decay = [p for n, p in network.named_parameters() if not any(n == f"head.{d}" for d in no_decay)]
    rest = [p for n, p in network.named_parameters() if any(n == f"head.{d}" for d in no_decay)]
    groups = [{"params": decay}] + ([{"params": rest, "weight_decay": 0.0}] if rest else [])
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(X) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    criterion = make_loss("asl", gamma_neg=4.0, gamma_pos=1.0, clip=0.05)
    X, Y = X.to(device), Y.to(device)
    for _ in range(epochs):
        order = torch.randperm(len(X), device=device)
        for start in range(0, len(X), batch_size):
            idx = order[start : start + batch_size]
            loss = criterion(network(X[idx]), Y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-clips", type=int, default=2048)
    parser.add_argument("--n-tokens", type=int, default=64)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--n-classes", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the best is kept")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpu-size", action="store_true", help="256 clips x 512 tokens x 768 dims, 100 classes")
    args = parser.parse_args()
    if args.gpu_size:
        args.n_clips, args.n_tokens, args.dim, args.n_classes = 256, 512, 768, 100
    device = torch.device(args.device)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.n_clips, args.n_tokens, args.dim)).astype(np.float32)
    Y = (rng.random((args.n_clips, args.n_classes)) < 0.1).astype(np.int64)
    X_t, Y_t = torch.from_numpy(X), torch.from_numpy(Y.astype(np.float32))
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch threads={torch.get_num_threads()}, tokens {X.shape}, {args.n_classes} classes, "
          f"{args.epochs} epochs, batch {args.batch_size}")
    print(f"{'probe':<14}{'params':>10}{'fit s':>9}{'bare s':>9}{'fit clips/s':>13}{'bare clips/s':>14}{'ratio':>7}")
    for Probe in (LinearProbeClassifier, AttentiveProbeClassifier, PrototypicalProbeClassifier):
        probe = Probe(max_iter=args.epochs, batch_size=args.batch_size, device=str(device), random_state=0)
        probe.fit(X[: args.batch_size], Y[: args.batch_size])  # warm-up (kernels, allocator)
        fit_s = min(timed(lambda probe=probe: probe.fit(X, Y)) for _ in range(args.repeats))
        lr, wd = probe.learning_rate, probe.weight_decay

        def reference(probe=probe, lr=lr, wd=wd):
            torch.manual_seed(0)
            network = ProbeNetwork(probe._build_head(args.dim, args.n_classes), probe.prefix_tokens)
            bare_loop(network, X_t, Y_t, epochs=args.epochs, batch_size=args.batch_size, lr=lr, weight_decay=wd,
                      no_decay=probe._no_decay, device=device, seed=0)

        reference()
        bare_s = min(timed(reference) for _ in range(args.repeats))
        seen = args.n_clips * args.epochs
        print(f"{Probe.__name__.replace('ProbeClassifier', ''):<14}{probe.n_trainable_parameters_:>10,}"
              f"{fit_s:>9.3f}{bare_s:>9.3f}{seen / fit_s:>13,.0f}{seen / bare_s:>14,.0f}{bare_s / fit_s:>7.2f}")


if __name__ == "__main__":
    main()
