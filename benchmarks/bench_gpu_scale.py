"""Probe training at AudioSet-20k size on a GPU: epoch times, fit against a bare loop, streaming, the full fit.

Tokens of AudioSet-20k's size (18,688 clips x 512 tokens x 768 dims, float16,
14.7 GB; 527 classes, 10 prototypes per class) are made on the host. For each
probe, side by side in one process:

- ``fit`` epoch: the median skorch epoch time (``history[:, "dur"]``) of a
  ``fit`` of ``--epochs`` epochs with the tokens resident on the GPU;
- per-batch sync: the same with skorch's ``loss.item()`` after every batch
  (``skprobe.probes._training.DEFER_LOSS_SYNC = False``), to show what that
  sync costs;
- bare epoch: a hand-written torch loop (same network, tokens, batch size,
  AdamW, cosine schedule and loss) over the same resident float16 tokens; the
  linear probe's bare loop pools once, as its ``fit`` does;
- streamed epoch: ``fit`` with a memory budget of two batches, so every batch
  streams from pinned host buffers;
- default ``fit``: the probe with its defaults (``max_iter="auto"``, 30 epochs
  at this size), timed from the host array to the fitted estimator
  (validation, normalisation statistics and the host-to-device copy
  included).

Usage::

    python benchmarks/bench_gpu_scale.py                       # AudioSet-20k size, CUDA
    python benchmarks/bench_gpu_scale.py --n-clips 512 --n-tokens 32 --dim 64 --n-classes 20 --device cpu  # smoke
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from skprobe import AttentiveProbeClassifier, LinearProbeClassifier, PrototypicalProbeClassifier
from skprobe.probes import _training, get_training_options, training_options
from skprobe.probes.linear import _PooledFeatureNetwork
from skprobe.probes.losses import make_loss


def make_tokens(n: int, t: int, d: int, device: torch.device, seed: int = 0) -> np.ndarray:
    """Standard-normal float16 tokens on the host, drawn on ``device`` in chunks (fast on a GPU)."""
    out = np.empty((n, t, d), dtype=np.float16)
    generator = torch.Generator(device=device).manual_seed(seed)
    step = max(1, (256 << 20) // (t * d * 2))
    for start in range(0, n, step):
        stop = min(n, start + step)
        out[start:stop] = torch.randn((stop - start, t, d), generator=generator, device=device,
                                      dtype=torch.float16).cpu().numpy()
    return out


def make_labels(n: int, n_classes: int, seed: int = 0) -> np.ndarray:
    """Multi-hot labels, about 2.5 positives per clip, every class present."""
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, n_classes)) < 2.5 / n_classes).astype(np.int8)
    Y[np.arange(n_classes) % n, np.arange(n_classes)] = 1
    return Y


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochTimes:
    """Records skorch's per-epoch durations of every ``fit`` run while active."""

    def __enter__(self):
        self.durations: list[float] = []
        self._fit = _training._ProbeNet.fit
        outer = self

        def fit(net, *args, **kwargs):
            out = outer._fit(net, *args, **kwargs)
            outer.durations = [float(v) for v in net.history[:, "dur"]]
            return out

        _training._ProbeNet.fit = fit
        return self

    def __exit__(self, *exc):
        _training._ProbeNet.fit = self._fit

    def median(self) -> float:
        later = self.durations[1:] or self.durations  # the first epoch includes one-off costs (kernels, buffers)
        return statistics.median(later)


def bare_epoch(network: torch.nn.Module, X: torch.Tensor, Y: torch.Tensor, *, epochs: int, batch_size: int,
               lr: float, weight_decay: float, no_decay: tuple[str, ...], device: torch.device,
               autocast: bool) -> float:
    """Seconds per epoch of a hand-written loop over tokens already on ``device`` (after one warm-up epoch).

    With ``autocast`` the forward pass runs under bfloat16 autocast and the loss in float32, as in ``fit``.
    """
    network = network.to(device).train()
    decay = [p for n, p in network.named_parameters() if n not in no_decay and p.requires_grad]
    rest = [p for n, p in network.named_parameters() if n in no_decay and p.requires_grad]
    groups = [{"params": decay}] + ([{"params": rest, "weight_decay": 0.0}] if rest else [])
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    steps = (epochs + 1) * -(-len(X) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    criterion = make_loss("asl", gamma_neg=4.0, gamma_pos=1.0, clip=0.05)

    def epoch():
        order = torch.randperm(len(X), device=device)
        for start in range(0, len(X), batch_size):
            idx = order[start : start + batch_size].sort().values
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = network(X[idx])
            loss = criterion(logits.float(), Y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()

    epoch()
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        epoch()
    sync(device)
    return (time.perf_counter() - start) / epochs


def fit_epoch(probe, X, Y, **options) -> tuple[float, float]:
    """(median epoch seconds, total fit seconds) of ``probe.fit(X, Y)`` under ``training_options(**options)``."""
    with training_options(**options), EpochTimes() as times:
        start = time.perf_counter()
        probe.fit(X, Y)
        total = time.perf_counter() - start
    return times.median(), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-clips", type=int, default=18688)
    parser.add_argument("--n-tokens", type=int, default=512)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--n-classes", type=int, default=527)
    parser.add_argument("--prototypes", type=int, default=10, help="prototypes per class (the paper's AudioSet value)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the timed fits and bare loops")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--probes", nargs="+", default=["linear", "attentive", "prototypical"])
    parser.add_argument("--skip-default-fit", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--item-sync", nargs="*", default=None, metavar="PROBE",
                        help="probes to also time with skorch's loss.item() per batch (default: all)")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    autocast = device.type == "cuda" and get_training_options().autocast_bf16

    start = time.perf_counter()
    X = make_tokens(args.n_clips, args.n_tokens, args.dim, device)
    Y = make_labels(args.n_clips, args.n_classes)
    print(f"{name}, torch {torch.__version__}: tokens {X.shape} float16 ({X.nbytes / 1e9:.1f} GB, made in "
          f"{time.perf_counter() - start:.1f} s), {args.n_classes} classes, batch {args.batch_size}, "
          f"bf16 autocast {'on' if autocast else 'off'}", flush=True)
    Y_dev = torch.from_numpy(Y.astype(np.float32)).to(device)
    X_dev = torch.from_numpy(X).to(device) if device.type == "cuda" else torch.from_numpy(X)

    probes = {
        "linear": lambda **kw: LinearProbeClassifier(**kw),
        "attentive": lambda **kw: AttentiveProbeClassifier(**kw),
        "prototypical": lambda **kw: PrototypicalProbeClassifier(n_prototypes_per_class=args.prototypes, **kw),
    }
    rows = []
    for key in args.probes:
        make = probes[key]
        common = dict(batch_size=args.batch_size, device=str(device), random_state=0)
        make(max_iter=1, **common).fit(X[: 4 * args.batch_size], Y[: 4 * args.batch_size])  # warm-up
        probe = make(max_iter=args.epochs, **common)
        fit_s, fit_total = fit_epoch(probe, X, Y)
        item_s = float("nan")
        if args.item_sync is None or key in args.item_sync:
            _training.DEFER_LOSS_SYNC = False
            try:
                item_s, _ = fit_epoch(make(max_iter=args.epochs, **common), X, Y)
            finally:
                _training.DEFER_LOSS_SYNC = True
        network = copy.deepcopy(probe.module_)
        no_decay = tuple(f"head.{p}" for p in probe._no_decay)
        if key == "linear":  # fit trains on features pooled once: so does the bare loop
            with torch.no_grad():
                features = torch.cat([network.head.pool(*network.split(X_dev[i : i + 256].to(device)))
                                      for i in range(0, len(X_dev), 256)])
            linear = _PooledFeatureNetwork(network.head)
            bare_s = bare_epoch(linear, features[:, None], Y_dev, epochs=args.epochs, batch_size=args.batch_size,
                                lr=probe.learning_rate_, weight_decay=probe.weight_decay, no_decay=no_decay,
                                device=device, autocast=autocast)
        else:
            bare_s = bare_epoch(network, X_dev, Y_dev, epochs=args.epochs, batch_size=args.batch_size,
                                lr=probe.learning_rate_, weight_decay=probe.weight_decay, no_decay=no_decay,
                                device=device, autocast=autocast)
        stream_s = float("nan")
        if not args.skip_stream and device.type == "cuda" and key != "linear":  # linear: features pooled once
            budget = 2 * args.batch_size * args.n_tokens * args.dim * 2
            stream_s, _ = fit_epoch(make(max_iter=2, **common), X, Y, device_memory_budget=budget)
        default_total = float("nan")
        default_iter = 0
        if not args.skip_default_fit:
            default = make(device=str(device), random_state=0)
            _, default_total = fit_epoch(default, X, Y)
            default_iter = default.n_iter_
        rows.append((key, fit_s, item_s, bare_s, stream_s, default_iter, default_total))
        print(f"{key}: fit epoch {fit_s:.3f} s (item() per batch {item_s:.3f} s), bare epoch {bare_s:.3f} s, "
              f"streamed epoch {stream_s:.3f} s; {args.epochs}-epoch fit {fit_total:.1f} s; default fit "
              f"({default_iter} epochs) {default_total:.1f} s", flush=True)

    n = args.n_clips
    print(f"\n{name}, bf16 autocast {'on' if autocast else 'off'}; {n:,} x {args.n_tokens} x {args.dim} float16 tokens, {args.n_classes} classes, "
          f"batch {args.batch_size}; epoch times are medians of epochs 2..{args.epochs}")
    print(f"{'probe':<14}{'fit epoch s':>12}{'clips/s':>10}{'bare epoch s':>13}{'fit/bare':>9}"
          f"{'item() epoch s':>15}{'streamed s':>11}{'stream/res':>11}{'default fit s':>14}{'epochs':>7}")
    for key, fit_s, item_s, bare_s, stream_s, default_iter, default_total in rows:
        print(f"{key:<14}{fit_s:>12.3f}{n / fit_s:>10,.0f}{bare_s:>13.3f}{bare_s / fit_s:>9.2f}"
              f"{item_s:>15.3f}{stream_s:>11.3f}{fit_s / stream_s:>11.2f}{default_total:>14.1f}{default_iter:>7}")


if __name__ == "__main__":
    main()
