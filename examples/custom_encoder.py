"""Register your own torch module as an encoder and probe it like a built-in one.

An encoder subclasses ``skprobe.AudioEncoder``: it takes a batch of mono
waveforms and returns one token map per requested layer, and it describes the
layout of those tokens. ``skprobe.check_encoder`` verifies the contract before
you use it.

    python examples/custom_encoder.py
"""

import numpy as np
import torch
import torchaudio
from torch import nn

from skprobe import (
    AudioEncoder,
    EncoderSpec,
    FrozenEncoderTransformer,
    PrototypicalProbeClassifier,
    TokenLayout,
    check_encoder,
    register_encoder,
)


class MelPatchEncoder(AudioEncoder):
    """Log-mel spectrogram cut into 8-band x 5-frame patches, each projected to 32 dims."""

    sample_rate = 16000
    n_layers = 2

    def __init__(self) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=32, center=False)
        self.patch = nn.Conv2d(1, 32, kernel_size=(5, 8), stride=(5, 8))
        self.mix = nn.Linear(32, 32)

    def forward_layers(self, wav, layers):
        spec = torch.log(self.mel(wav) + 1e-6).transpose(1, 2).unsqueeze(1)  # B, 1, T, F
        x = self.patch(spec).flatten(2).transpose(1, 2)  # B, T'*F', 32, time-major
        out = [x] if 0 in layers else []
        if 1 in layers:
            out.append(torch.tanh(self.mix(x)))
        return out

    def layout(self, n_samples, layer):
        n_frames = 1 + (n_samples - 400) // 160
        return TokenLayout(prefix_tokens=0, n_time=n_frames // 5, n_freq=32 // 8, dim=32, hop_seconds=0.05)


def build() -> MelPatchEncoder:
    torch.manual_seed(0)  # your builder would load real weights instead
    return MelPatchEncoder()


def main() -> float:
    layouts = check_encoder(build())
    print("contract ok; last layer:", layouts[1])
    register_encoder(EncoderSpec(name="mel-patches", builder=build, sample_rate=16000, clip_seconds=1.0,
                                 requires_checkpoint=False, description="example encoder"), overwrite=True)
    rng = np.random.default_rng(0)
    wavs = 0.05 * rng.normal(size=(80, 16000)).astype(np.float32)
    y = np.arange(80) % 2
    t = np.arange(16000) / 16000
    for i in np.flatnonzero(y):  # class 1: a short 3 kHz tone somewhere in the clip
        start = rng.integers(0, 14000)
        wavs[i, start : start + 2000] += 0.3 * np.sin(2 * np.pi * 3000 * t[:2000])
    tokens = FrozenEncoderTransformer(encoder="mel-patches").fit_transform(list(wavs))
    probe = PrototypicalProbeClassifier(n_prototypes_per_class=4, random_state=0).fit(tokens[:60], y[:60])
    accuracy = probe.score(tokens[60:], y[60:])
    print(f"tokens {tokens.shape}; test accuracy {accuracy:.2f}")
    return accuracy


if __name__ == "__main__":
    main()
