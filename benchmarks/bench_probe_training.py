"""Probe training speed: skprobe's ``fit`` against a bare torch loop on the same module.

For each probe, the same head (same initialisation), the same tokens, batch
size, optimiser (AdamW with the same parameter groups), cosine schedule and
loss are trained once through ``Probe.fit`` (validation, skorch loop, fitted
attributes included) and once by a minimal hand-written loop. ``fit`` of the
linear probe pools every clip once and trains on the pooled features, so it
is also compared with a bare loop written that way ("pool once"). The convex
gated probe trains on the same tokens split into ``--layers`` layers
(``(n, L, n_tokens / L, dim)``). Prints samples/s for both and the ratio
``bare time / fit time`` (1.0 = no overhead; target >= 0.8).

Usage::

    python benchmarks/bench_probe_training.py                      # CPU default size
    python benchmarks/bench_probe_training.py --gpu-size --device cuda   # 256 x 512 x 768, 100 classes
    python benchmarks/bench_probe_training.py --probes cgp --layers 6    # the convex gated probe only
    python benchmarks/bench_probe_training.py --inference          # batched vs one-clip-at-a-time predict_proba
    python benchmarks/bench_probe_training.py --memmap-rss 1 4     # peak RSS fitting from 1 GB / 4 GB float16 memmaps
    python benchmarks/bench_probe_training.py --grid-rss 1         # GridSearchCV(n_jobs=2) peak RSS per worker
    python benchmarks/bench_probe_training.py --device cuda --stream   # also: tokens forced to stream (budget)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from skprobe import (
    AttentiveProbeClassifier,
    ConvexGatedProbeClassifier,
    LinearProbeClassifier,
    PrototypicalProbeClassifier,
)
from skprobe.probes.base import ProbeNetwork
from skprobe.probes.convex_gated import LayeredProbeNetwork
from skprobe.probes.losses import make_loss

PROBES = {"linear": LinearProbeClassifier, "attentive": AttentiveProbeClassifier,
          "prototypical": PrototypicalProbeClassifier, "cgp": ConvexGatedProbeClassifier}


def bare_loop(network, X, Y, *, epochs, batch_size, lr, weight_decay, no_decay, device, seed, asl=(4.0, 1.0, 0.05)):
    """The reference: the same optimisation written directly in torch."""
    torch.manual_seed(seed)
    network = network.to(device)
    decay = [p for n, p in network.named_parameters() if not any(n == f"head.{d}" for d in no_decay)]
    rest = [p for n, p in network.named_parameters() if any(n == f"head.{d}" for d in no_decay)]
    groups = [{"params": decay}] + ([{"params": rest, "weight_decay": 0.0}] if rest else [])
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=torch.device(device).type in ("cpu", "cuda"))
    steps = epochs * -(-len(X) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    criterion = make_loss("asl", gamma_neg=asl[0], gamma_pos=asl[1], clip=asl[2])
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


def inference(args) -> None:
    """predict_proba in padded batches of 128 against one clip at a time (batch_size=1), side by side."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.n_clips, args.n_tokens, args.dim)).astype(np.float32)
    Y = (rng.random((args.n_clips, args.n_classes)) < 0.1).astype(np.int64)
    print(f"predict_proba on {X.shape} float32, device={args.device}, torch threads={torch.get_num_threads()}")
    print(f"{'probe':<14}{'batch 128 s':>12}{'1 clip s':>10}{'speed-up':>10}{'max |diff|':>12}")
    for Probe in (LinearProbeClassifier, AttentiveProbeClassifier, PrototypicalProbeClassifier):
        probe = Probe(max_iter=1, batch_size=128, device=args.device, random_state=0).fit(X[:256], Y[:256])
        batched_s = timed(lambda probe=probe: probe.set_params(batch_size=128).predict_proba(X))
        batched = probe.predict_proba(X)
        single_s = timed(lambda probe=probe: probe.set_params(batch_size=1).predict_proba(X))
        single = probe.predict_proba(X)
        print(f"{Probe.__name__.replace('ProbeClassifier', ''):<14}{batched_s:>12.2f}{single_s:>10.2f}"
              f"{single_s / batched_s:>10.1f}{np.abs(batched - single).max():>12.2e}")


_RSS_CHILD = """
import json, sys
import numpy as np
from skprobe import LinearProbeClassifier
path, n, t, d = sys.argv[1], *map(int, sys.argv[2:5])
X = np.memmap(path, dtype=np.float16, mode="r", shape=(n, t, d))
y = (np.arange(n) % 7 == 0).astype(int)
LinearProbeClassifier(max_iter=1, random_state=0, device="cpu").fit(X, y).predict_proba(X[:4096])
# VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across fork + exec, so a child started by a
# parent that has just written the memmap would report the parent's resident size
hwm_kb = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
print(json.dumps({"peak_rss_mb": hwm_kb / 1024}))
"""


def _write_memmap(path: str, n: int, t: int, d: int) -> None:
    mm = np.memmap(path, dtype=np.float16, mode="w+", shape=(n, t, d))
    rng = np.random.default_rng(0)
    block = rng.normal(size=(4096, t, d)).astype(np.float16)
    for start in range(0, n, 4096):
        mm[start : start + 4096] = block[: min(4096, n - start)]
    mm.flush()
    del mm


def memmap_rss(args) -> None:
    """Peak RSS of a fresh process fitting one epoch of the linear probe from float16 memmaps of the given GB."""
    t, d = 16, 64  # small dim, many clips: 2 KB per clip
    print(f"fit (1 epoch, linear) + predict_proba from float16 np.memmap, clips of {t} x {d}")
    for gb in args.memmap_rss:
        n = int(gb * 2**30) // (t * d * 2)
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            path = os.path.join(tmp, "tokens.f16")
            _write_memmap(path, n, t, d)
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", _RSS_CHILD, path, str(n), str(t), str(d)], check=True,
                                 capture_output=True, text=True)
            peak = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]
            print(f"{gb:>5} GB memmap ({n:,} clips): peak RSS {peak:,.0f} MB, {time.perf_counter() - start:.0f} s")


def grid_rss(args) -> None:
    """GridSearchCV(n_jobs=2) on a float16 memmap: the workers' peak RSS with and without TokenView."""
    from joblib.externals.loky import get_reusable_executor
    from sklearn.model_selection import GridSearchCV

    from skprobe.probes import TokenView

    t, d = 16, 64
    n = int(args.grid_rss * 2**30) // (t * d * 2)

    def worker_rss(estimator, X, y):
        # VmHWM: ru_maxrss would carry the parent's peak into a worker started by fork + exec
        return int([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]) / 1024

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = os.path.join(tmp, "tokens.f16")
        _write_memmap(path, n, t, d)
        X = np.memmap(path, dtype=np.float16, mode="r", shape=(n, t, d))
        y = (np.arange(n) % 7 == 0).astype(int)
        print(f"GridSearchCV(LinearProbeClassifier, 2 x 3-fold, n_jobs=2) on a {args.grid_rss} GB float16 memmap")
        for name, data in (("np.memmap", X), ("TokenView(np.memmap)", TokenView(X))):
            search = GridSearchCV(LinearProbeClassifier(max_iter=1, device="cpu", random_state=0),
                                  {"learning_rate": [1e-3, 1e-2]}, cv=3, n_jobs=2, scoring=worker_rss, refit=False)
            search.fit(data, y)
            peaks = search.cv_results_["mean_test_score"]
            get_reusable_executor().shutdown(wait=True)  # fresh workers (and peaks) for the next variant
            print(f"{name:<22} worker peak RSS {max(peaks):,.0f} MB (mean over fits {np.mean(peaks):,.0f} MB)")


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
    parser.add_argument("--probes", nargs="+", default=list(PROBES), choices=list(PROBES))
    parser.add_argument("--layers", type=int, default=4,
                        help="layers the convex gated probe's tokens are split into (must divide --n-tokens)")
    parser.add_argument("--gpu-size", action="store_true", help="256 clips x 512 tokens x 768 dims, 100 classes")
    parser.add_argument("--dtype", default="float32", choices=["float16", "float32"], help="token dtype for fit")
    parser.add_argument("--stream", action="store_true",
                        help="CUDA: also time fit with a memory budget below the tokens' size (streamed batches)")
    parser.add_argument("--inference", action="store_true",
                        help="time predict_proba batched vs one clip at a time (default size 2000 x 97 x 768)")
    parser.add_argument("--memmap-rss", type=float, nargs="+", metavar="GB", help="peak RSS from memmaps of GB")
    parser.add_argument("--grid-rss", type=float, metavar="GB", help="GridSearchCV worker RSS on a memmap of GB")
    parser.add_argument("--tmp", default=None, help="folder for the memmap files")
    args = parser.parse_args()
    if args.memmap_rss:
        return memmap_rss(args)
    if args.grid_rss:
        return grid_rss(args)
    if args.inference:
        if (args.n_clips, args.n_tokens, args.dim) == (2048, 64, 256):
            args.n_clips, args.n_tokens, args.dim, args.n_classes = 2000, 97, 768, 10
        return inference(args)
    if args.gpu_size:
        args.n_clips, args.n_tokens, args.dim, args.n_classes = 256, 512, 768, 100
    device = torch.device(args.device)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.n_clips, args.n_tokens, args.dim)).astype(args.dtype)
    Y = (rng.random((args.n_clips, args.n_classes)) < 0.1).astype(np.int64)
    X_t, Y_t = torch.from_numpy(X), torch.from_numpy(Y.astype(np.float32))
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch threads={torch.get_num_threads()}, tokens {X.shape}, {args.n_classes} classes, "
          f"{args.epochs} epochs, batch {args.batch_size}")
    print(f"{'probe':<14}{'params':>10}{'fit s':>9}{'bare s':>9}{'fit clips/s':>13}{'bare clips/s':>14}{'ratio':>7}")
    for name in args.probes:
        Probe = PROBES[name]
        layered = Probe is ConvexGatedProbeClassifier
        # the same token vectors for every probe; the convex gated probe sees them as L layers of T / L tokens
        X_in = X.reshape(len(X), args.layers, -1, args.dim) if layered else X
        # the bare loop trains on raw tokens; the prototypical probe's "auto" would first choose its normalisation
        # on held-out clips (extra training this benchmark does not compare)
        extra = {"normalize_tokens": "none"} if Probe is PrototypicalProbeClassifier else {}
        probe = Probe(max_iter=args.epochs, batch_size=args.batch_size, device=str(device), random_state=0, **extra)
        probe.fit(X_in[: args.batch_size], Y[: args.batch_size])  # warm-up (kernels, allocator)
        fit_s = min(timed(lambda probe=probe, X_in=X_in: probe.fit(X_in, Y)) for _ in range(args.repeats))
        lr, wd = probe.learning_rate_, probe.weight_decay

        def reference(probe=probe, lr=lr, wd=wd, layered=layered):
            torch.manual_seed(0)
            head = probe._build_head(args.dim, args.n_classes)
            network = (LayeredProbeNetwork(head, probe.prefix_tokens, n_layers=args.layers) if layered
                       else ProbeNetwork(head, probe.prefix_tokens))
            bare_loop(network, X_t, Y_t, epochs=args.epochs, batch_size=args.batch_size, lr=lr, weight_decay=wd,
                      no_decay=probe._no_decay, device=device, seed=0,
                      asl=(probe.asl_gamma_neg, probe.asl_gamma_pos, probe.asl_clip))

        reference()
        bare_s = min(timed(reference) for _ in range(args.repeats))
        seen = args.n_clips * args.epochs
        print(f"{Probe.__name__.replace('ProbeClassifier', ''):<14}{probe.n_trainable_parameters_:>10,}"
              f"{fit_s:>9.3f}{bare_s:>9.3f}{seen / fit_s:>13,.0f}{seen / bare_s:>14,.0f}{bare_s / fit_s:>7.2f}")
        if Probe is LinearProbeClassifier:
            # fit pools every clip once (the pooling has no parameters); the same algorithm written bare
            def pooled_reference(probe=probe, lr=lr, wd=wd):
                torch.manual_seed(0)
                features = torch.cat([X_t[i : i + 4096].to(device).float().mean(1) for i in range(0, len(X_t), 4096)])
                network = torch.nn.Linear(args.dim, args.n_classes)
                bare_loop(network, features, Y_t, epochs=args.epochs, batch_size=args.batch_size, lr=lr,
                          weight_decay=wd, no_decay=(), device=device, seed=0)

            pooled_reference()
            pooled_s = min(timed(pooled_reference) for _ in range(args.repeats))
            print(f"{'  pool once':<14}{'':>10}{'':>9}{pooled_s:>9.3f}{'':>13}{seen / pooled_s:>14,.0f}"
                  f"{pooled_s / fit_s:>7.2f}  (bare loop on features pooled once)")
        if args.stream and device.type == "cuda":
            from skprobe.probes import training_options

            with training_options(device_memory_budget=X[: 2 * args.batch_size].nbytes):
                stream_s = min(timed(lambda probe=probe, X_in=X_in: probe.fit(X_in, Y)) for _ in range(args.repeats))
            print(f"{'  streamed':<14}{'':>10}{stream_s:>9.3f}{'':>9}{seen / stream_s:>13,.0f}{'':>14}"
                  f"{fit_s / stream_s:>7.2f}  (streamed / resident throughput)")


if __name__ == "__main__":
    main()
