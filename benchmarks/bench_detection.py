"""Event detection in long recordings: peak memory and throughput against the recording's length.

Writes synthetic recordings (noise with a tone burst every 30 s, 16 kHz PCM
WAV, made in blocks) of each length, then in a fresh process per length
fits a ``Pipeline(FrozenEncoderTransformer(encoder), PrototypicalProbeClassifier)``
on 16 short clips, runs ``skprobe.detect_events`` on the recording and prints
the peak resident set (``VmHWM``), the wall time and the throughput in
audio-seconds per second. Memory should not depend on the length.

``--encoder stub`` replaces the encoder and probe by a scorer with YAMNet's
window geometry (10 s windows, 32 frames of 0.32 s) that scores each frame by
its energy: it measures the streaming machinery alone (reading, windows,
stitching, filtering, events), at the speed of reading the file.

Usage::

    python benchmarks/bench_detection.py                            # YAMNet, 10 minutes vs 10 hours
    python benchmarks/bench_detection.py --minutes 10 60            # YAMNet, 10 minutes vs 1 hour
    python benchmarks/bench_detection.py --encoder stub --minutes 10 600
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

CHILD = """
import sys, time, numpy as np
from sklearn.pipeline import make_pipeline
from skprobe import FrozenEncoderTransformer, PrototypicalProbeClassifier, detect_events
encoder_name, path = sys.argv[1], sys.argv[2]


class Stub:  # YAMNet's geometry, frames scored by their energy
    sample_rate, window_samples, n_frames, hop_seconds, class_names = 16000, 160000, 32, 0.32, ["tone", "noise"]

    def score_windows(self, windows):
        frames = np.pad(windows, ((0, 0), (0, 32 * 5120 - windows.shape[1]))).reshape(len(windows), 32, -1)
        loud = np.sqrt((frames ** 2).mean(axis=-1)) > 0.1
        return np.stack([loud, ~loud], axis=-1).astype(float)


if encoder_name == "stub":
    model = Stub()
else:
    encoder = FrozenEncoderTransformer(encoder=encoder_name, device="cpu", batch_size=16).fit(None)
    rng = np.random.default_rng(0)
    clips = (0.05 * rng.standard_normal((16, encoder.n_samples_))).astype(np.float32)
    clips[::2, : encoder.n_samples_ // 4] += 0.3 * np.sin(np.arange(encoder.n_samples_ // 4) * 0.3)
    Y = np.stack([np.arange(16) % 2 == 0, np.arange(16) % 2 == 1], axis=1).astype(int)
    model = make_pipeline(encoder, PrototypicalProbeClassifier(prefix_tokens=encoder.prefix_tokens_, max_iter=3,
                                                               random_state=0, device="cpu")).fit(clips, Y)
start = time.perf_counter()
events = detect_events(model, path, class_names=["tone", "noise"], median_filter=1.0)
seconds = time.perf_counter() - start
peak = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(len(events), int(peak), seconds, sum(events.attrs["durations"].values()))
"""


def write_recording(path: Path, minutes: float, rate: int = 16000) -> None:
    """Noise with a 2 s tone every 30 s, written a minute at a time (never held whole)."""
    rng = np.random.default_rng(0)
    t = np.arange(60 * rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * ((t % 30) < 2)
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as fh:
        left = minutes * 60 * rate
        while left > 0:
            n = int(min(left, len(t)))
            fh.write((0.02 * rng.standard_normal(n) + tone[:n]).astype(np.float32))
            left -= n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="yamnet")
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 600])
    args = parser.parse_args()
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    load = os.getloadavg()[0]
    print(f"{args.encoder} on {os.cpu_count()} CPU cores (load average {load:.1f}); detect_events with overlap 0.5, "
          "median filter 1 s")
    print(f"{'recording':>12}{'events':>8}{'peak RSS (MB)':>15}{'wall (s)':>10}{'audio-s/s':>11}")
    peaks = []
    with tempfile.TemporaryDirectory() as folder:
        for minutes in args.minutes:
            path = Path(folder) / f"{minutes:g}min.wav"
            write_recording(path, minutes)
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CHILD, args.encoder, str(path)], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()
            n_events, peak_kb, seconds, audio = int(out[0]), int(out[1]), float(out[2]), float(out[3])
            peaks.append(peak_kb)
            print(f"{minutes:>8g} min{n_events:>8}{peak_kb / 1024:>15.0f}{seconds:>10.1f}{audio / seconds:>11.0f}"
                  f"   (child {time.perf_counter() - start:.0f} s)")
            path.unlink()
    print(f"peak RSS of the longest over the shortest: {peaks[-1] / peaks[0]:.3f}")


if __name__ == "__main__":
    main()
