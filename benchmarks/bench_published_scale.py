"""`skprobe benchmark --dataset fsd50k` end to end on a synthetic FSD50K-shaped folder: memory and stage times.

Writes FSD50K's layout (``FSD50K.ground_truth/{vocabulary,dev,eval}.csv`` with
the published columns and quoting, ``FSD50K.dev_audio/``,
``FSD50K.eval_audio/``) with N short WAV clips (16 kHz mono, 0.5 to 1 s: a
tone per label over noise; 72 % train, 8 % val, 20 % eval as in FSD50K;
200 classes, 1 to 3 labels per clip), for each size asked. Then runs the
command with the tiny test encoder (``tiny-vit``) in a fresh process per
size and per mode (in this process, and ``--workers 2`` on a local Dask
cluster), each with a fresh data home (so every clip is encoded and every
probe fitted; one seed, one epoch per probe, 5 prototypes per class), and
prints:

- the driver's peak resident set (``VmHWM`` of the process running the command);
- the peak of the summed resident sets of the driver and its children (Dask
  workers), sampled every 0.2 s;
- the seconds of each stage the command reports (read, extract, train, score, write).

The files stream from disk through the encoder into the token store and the
probes train on the store-backed tokens: the peaks should not grow with N.

Usage::

    python benchmarks/bench_published_scale.py                     # 2,000 and 20,000 clips, both modes
    python benchmarks/bench_published_scale.py --sizes 200 2000 --modes local
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
N_CLASSES = 200
# One epoch each (every token is read once, which is what memory depends on); 5 prototypes per class keep the
# prototypical probe's fit within minutes on a CPU. Scores are not the point: the clips are synthetic.
PROBE_PARAMS = {"linear": {"max_iter": 1, "cv": None}, "attentive": {"max_iter": 1},
                "prototypical": {"max_iter": 1, "n_prototypes_per_class": 5}}

CHILD = """
import sys
from skprobe.cli import main
code = main(sys.argv[1:])
peak = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print("VMHWM_KB", peak, flush=True)
sys.exit(code)
"""


def write_fsd50k(root: Path, n: int, seed: int = 0) -> dict:
    """An FSD50K-shaped folder of ``n`` clips; returns the split sizes."""
    rng = np.random.default_rng(seed)
    gt = root / "FSD50K.ground_truth"
    for folder in (gt, root / "FSD50K.dev_audio", root / "FSD50K.eval_audio"):
        folder.mkdir(parents=True, exist_ok=True)
    vocabulary = [(f"Class_{j:03d}", f"/m/s{j:05d}") for j in range(N_CLASSES)]
    with open(gt / "vocabulary.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows([j, name, mid] for j, (name, mid) in enumerate(vocabulary))
    n_eval, n_val = int(0.2 * n), int(0.08 * n)
    splits = ["eval"] * n_eval + ["val"] * n_val + ["train"] * (n - n_eval - n_val)
    rows = {"dev": [["fname", "labels", "mids", "split"]], "eval": [["fname", "labels", "mids"]]}
    rate = 16000
    for i, split in enumerate(splits):
        labels = sorted(rng.choice(N_CLASSES, size=int(rng.integers(1, 4)), replace=False))
        seconds = float(rng.uniform(0.5, 1.0))
        t = np.arange(int(seconds * rate)) / rate
        wav = 0.02 * rng.standard_normal(t.size)
        for j in labels:
            wav += 0.1 * np.sin(2 * np.pi * (100 + 35 * j) * t)
        part = "eval" if split == "eval" else "dev"
        fname = 100000 + i
        sf.write(root / f"FSD50K.{part}_audio" / f"{fname}.wav", wav.astype(np.float32), rate, subtype="PCM_16")
        names = ",".join(vocabulary[j][0] for j in labels)
        mids = ",".join(vocabulary[j][1] for j in labels)
        rows[part].append([fname, names, mids] + ([split] if part == "dev" else []))
    for part, table in rows.items():
        with open(gt / f"{part}.csv", "w", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerows(table)
    return {"train": splits.count("train"), "val": n_val, "eval": n_eval}


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run(root: Path, work: Path, workers: int | None, batch_size: int) -> dict:
    home = Path(tempfile.mkdtemp(dir=work, prefix="home-"))
    out = home / "results"
    argv = ["benchmark", "--encoder", "tiny-vit", "--dataset", "fsd50k", "--root", str(root), "--seeds", "1",
            "--device", "cpu", "--batch-size", str(batch_size), "--output", str(out), "--quiet",
            "--probe-params", json.dumps(PROBE_PARAMS)]
    if workers:
        argv += ["--workers", str(workers), "--chunk-size", "256"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "SKPROBE_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the command failed ({proc.returncode}):\n{stderr[-3000:]}")
    hwm = int(next(line.split()[1] for line in stdout.splitlines() if line.startswith("VMHWM_KB")))
    result = json.loads((out / "results.json").read_text())
    table = stdout[: stdout.index("VMHWM_KB")].strip()
    return {"hwm_mib": hwm / 1024, "tree_mib": peak[0] / 2**20, "seconds": seconds, "timings": result["timings"],
            "extraction": result["extraction"], "table": table,
            "macro_map": {p: s["macro_map"]["mean"] for p, s in result["summary"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--modes", nargs="+", default=["local", "workers"], choices=["local", "workers"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--work", help="folder for the data sets and data homes (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="skprobe-published-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"2-core CPU machine; work folder {work}", flush=True)
    rows = []
    for n in args.sizes:
        root = work / f"fsd50k-{n}"
        if not (root / "FSD50K.ground_truth" / "eval.csv").is_file():
            start = time.perf_counter()
            sizes = write_fsd50k(root, n)
            print(f"wrote {n:,} clips {sizes} in {time.perf_counter() - start:.0f} s", flush=True)
        for mode in args.modes:
            r = run(root, work, args.workers if mode == "workers" else None, args.batch_size)
            t = r["timings"]
            rows.append((n, mode, r))
            print(f"\n{n:,} clips, {mode}: driver peak {r['hwm_mib']:.1f} MiB, with children {r['tree_mib']:.1f} MiB; "
                  f"read {t['read']:.1f} s, extract {t['extract']:.1f} s ({r['extraction']['encoded']:,} encoded, "
                  f"{r['extraction']['clips'] / t['extract']:.0f} clips/s), train {t['train']:.1f} s, "
                  f"score {t['score']:.1f} s, write {t['write']:.1f} s; process {r['seconds']:.0f} s", flush=True)
            print("\n".join("    " + line for line in r["table"].splitlines()), flush=True)
    print("\n| clips | mode | driver peak RSS | peak RSS with workers | read | extract | train | score | write |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, mode, r in rows:
        t = r["timings"]
        print(f"| {n:,} | {mode} | {r['hwm_mib']:.1f} MiB | {r['tree_mib']:.1f} MiB | {t['read']:.1f} s | "
              f"{t['extract']:.1f} s | {t['train']:.1f} s | {t['score']:.1f} s | {t['write']:.1f} s |")
    for mode in args.modes:
        peaks = [(n, r) for n, m, r in rows if m == mode]
        if len(peaks) > 1:
            (n0, small), (n1, large) = peaks[0], peaks[-1]
            print(f"{mode}: driver peak at {n1:,} / at {n0:,} clips: {large['hwm_mib'] / small['hwm_mib']:.3f}; "
                  f"with children: {large['tree_mib'] / small['tree_mib']:.3f}")


if __name__ == "__main__":
    main()
