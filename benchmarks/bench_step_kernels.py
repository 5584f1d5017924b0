"""Two kernels of a probe training step on the CPU: the prototype maximum's backward and the AdamW update.

- The prototypical probe scores a clip by the best match of each prototype
  over its tokens, ``(tokens @ prototypes.T).amax(1)``. Autograd's backward
  multiplies the dense ``(B, M, K)`` gradient back (as costly as the forward
  product); skprobe's (``skprobe/probes/_similarity.py``) multiplies a sparse
  CSR matrix of the ``B x K`` attaining tokens. Prints forward, dense
  backward and sparse backward times and the largest gradient difference.
- AdamW over the attentive probe's parameters (2.1 M for 1,024-dimensional
  tokens and 17 classes): per-tensor loop (torch's CPU default),
  ``foreach`` and ``fused`` (what skprobe's training uses on CPU and CUDA).

Usage::

    python benchmarks/bench_step_kernels.py                  # batch 150, 64 tokens, D 1024, K 340 (event scenes)
    python benchmarks/bench_step_kernels.py --batch 75 --prototypes 5270 --dim 768
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from skprobe import AttentiveProbeClassifier
from skprobe.probes._similarity import max_similarities


def timed(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=150)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--prototypes", type=int, default=340)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    tokens = F.normalize(torch.randn(args.batch, args.tokens, args.dim), dim=-1)
    prototypes = torch.randn(args.prototypes, args.dim, requires_grad=True)
    weight = torch.randn(args.batch, args.prototypes)

    def forward():
        with torch.no_grad():
            (tokens @ prototypes.T).amax(1)

    def dense():
        prototypes.grad = None
        ((tokens @ prototypes.T).amax(1) * weight).sum().backward()
        return prototypes.grad.clone()

    def sparse():
        prototypes.grad = None
        (max_similarities(tokens, prototypes) * weight).sum().backward()
        return prototypes.grad.clone()

    print(f"prototype maximum, B={args.batch} M={args.tokens} D={args.dim} K={args.prototypes} "
          f"({torch.get_num_threads()} threads):")
    t_forward = timed(forward, args.repeats)
    t_dense, t_sparse = timed(dense, args.repeats), timed(sparse, args.repeats)
    print(f"  forward only             {t_forward:8.1f} ms")
    print(f"  forward + dense backward {t_dense:8.1f} ms")
    print(f"  forward + sparse backward{t_sparse:8.1f} ms   ({t_dense / t_sparse:.2f}x)")
    print(f"  largest gradient difference {float((dense() - sparse()).abs().max()):.2e}")

    # the attentive probe's own parameters for these tokens and 17 classes (a fit of one epoch on 40 clips)
    X = torch.randn(40, 4, args.dim).numpy()
    Y = (torch.rand(40, 17) < 0.3).int().numpy()
    probe = AttentiveProbeClassifier(max_iter=1, random_state=0, device="cpu").fit(X, Y)
    params = [p for p in probe.module_.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    print(f"AdamW step, the attentive probe's {sum(p.numel() for p in params):,} parameters "
          f"in {len(params)} tensors:")
    for label, options in (("per-tensor loop", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        optimizer = torch.optim.AdamW(params, lr=1e-3, **options)
        print(f"  {label:<16}{timed(optimizer.step, args.repeats):8.2f} ms")


if __name__ == "__main__":
    main()
