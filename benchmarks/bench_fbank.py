"""Throughput of skprobe's batched KaldiFbank against the per-clip torchaudio loop.

Usage::

    python benchmarks/bench_fbank.py [--batch 64] [--seconds 10] [--repeats 5] [--devices cpu cuda]

Prints clips per second for ``torchaudio.compliance.kaldi.fbank`` called once
per clip and for :class:`skprobe.encoders.components.frontends.KaldiFbank` on the whole
batch (the Audio-MAE / EAT / SSLAM settings: 16 kHz, 128 mel bins, hanning
window, 25 ms / 10 ms, no dither, no energy), the speed-up, and the largest
absolute difference between the two outputs. CUDA runs only when available.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torchaudio.compliance.kaldi as ta_kaldi

from skprobe.encoders.components.frontends import KaldiFbank

OPTIONS = dict(
    htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
    num_mel_bins=128, dither=0.0, frame_shift=10,
)


def _run(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def bench(device: torch.device, batch: int, seconds: float, repeats: int) -> dict[str, float]:
    """Median clips/s of both methods; their calls alternate, so load spikes hit both alike."""
    gen = torch.Generator().manual_seed(0)
    wav = (0.3 * torch.randn(batch, int(seconds * 16000), generator=gen)).to(device)
    fbank = KaldiFbank(num_mel_bins=128)

    def loop():
        return torch.stack([ta_kaldi.fbank(w[None], **OPTIONS) for w in wav])

    def batched():
        return fbank(wav)

    diff = (loop() - batched()).abs().max().item()  # also the warm-up
    t_loop, t_batched = [], []
    for _ in range(repeats):
        t_loop.append(_run(loop, device))
        t_batched.append(_run(batched, device))
    t_loop, t_batched = sorted(t_loop)[repeats // 2], sorted(t_batched)[repeats // 2]
    return {"loop": batch / t_loop, "batched": batch / t_batched, "speedup": t_loop / t_batched, "max_abs_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads; batch {args.batch} x {args.seconds:g} s clips")
    print(f"{'device':<8}{'torchaudio loop':>18}{'KaldiFbank':>14}{'speed-up':>10}{'max |diff|':>12}")
    for name in args.devices:
        if name == "cuda" and not torch.cuda.is_available():
            print("cuda    (not available)")
            continue
        device = torch.device(name)
        r = bench(device, args.batch, args.seconds, args.repeats)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"{name:<8}{r['loop']:>13.0f} c/s{r['batched']:>10.0f} c/s{r['speedup']:>9.1f}x"
              f"{r['max_abs_diff']:>12.2e}  ({label})")


if __name__ == "__main__":
    main()
