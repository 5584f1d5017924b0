"""Regenerate tests/data/aisfx_golden.npz from the aisfx package's own code.

Two steps, because the reference front end needs Essentia and the reference
network needs torch (they need not share an environment)::

    pip download --no-deps aisfx==0.1.2 && unzip aisfx-0.1.2-*.whl -d AISFX
    # 1. in a venv with `pip install essentia soundfile numpy`:
    python make_aisfx_golden.py spec AISFX
    # 2. with torch (skprobe's environment):
    python make_aisfx_golden.py embed AISFX

The signal is the analytic test clip of tests/test_aisfx.py (no randomness).
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SR = 44100
N = 99 * 1024  # 100 Essentia frames: one aiSFX embedding block


def synth(n: int = N, sr: int = SR) -> np.ndarray:
    t = np.arange(n) / sr
    chirp = 0.3 * np.sin(2 * np.pi * (200 * t + 1500 * t**2))
    tone = 0.2 * np.sin(2 * np.pi * 3000 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    clicks = 0.5 * np.exp(-60 * np.mod(t, 0.25)) * np.sin(2 * np.pi * 800 * t)
    return (chirp + tone + clicks).astype(np.float32)


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(step: str, root: Path) -> None:
    tmp = HERE / "_aisfx_spec.npy"
    if step == "spec":
        import soundfile as sf

        wav = HERE / "_aisfx_clip.wav"
        sf.write(wav, synth(), SR, subtype="FLOAT")
        se = _module(root / "aisfx/spectrogram/spectrogram_essentia.py", "se")
        spec = se.compute_spectrogram(filename=str(wav), sr=float(SR), block_size=2048, hop_size=1024,
                                      n_mels=96, f_min=0.0, f_max=22050.0)
        wav.unlink()
        np.save(tmp, spec)
        return
    import torch

    cnn2d = _module(root / "aisfx/models/cnn2d.py", "cnn2d")
    prep = _module(root / "aisfx/preprocessing.py", "prep")
    spec = prep.spectrogram_normalize(np.load(tmp))
    weights, datasets = torch.load(root / "aisfx/models/checkpoint.pth", map_location="cpu", weights_only=False)
    model = cnn2d.CrossNet(cnn2d.EmbeddingNet("max", 3, 1, 64), datasets, "cpu")
    model.load_state_dict(weights)
    model.eval()
    with torch.no_grad():
        emb = model.get_embedding(torch.tensor(spec[None], dtype=torch.float32))[0].numpy()
    np.savez(HERE / "aisfx_golden.npz", logmel=spec.astype(np.float32), embedding=emb)
    tmp.unlink()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
