"""The batched Kaldi fbank and the normalised fbank front end against torchaudio."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torchaudio.compliance.kaldi as ta_kaldi

from skprobe.encoders.components.frontends import KaldiFbank, NormalizedFbank, kaldi_mel_banks


def _reference(wav: torch.Tensor, **kwargs) -> torch.Tensor:
    """torchaudio's per-clip fbank, stacked."""
    opts = dict(dither=0.0, use_energy=False, htk_compat=True)
    opts.update(kwargs)
    return torch.stack([ta_kaldi.fbank(w[None], **opts) for w in wav])


SETTINGS = [
    # The encoders' setting (Audio-MAE, EAT, SSLAM, BEATs, ASiT, AST).
    dict(num_mel_bins=128, window_type="hanning"),
    dict(num_mel_bins=128, window_type="hanning", frame_shift=10.0, frame_length=25.0, low_freq=20.0),
    dict(num_mel_bins=80, window_type="povey"),
    dict(num_mel_bins=64, window_type="hamming", frame_length=32.0, frame_shift=16.0),
    dict(num_mel_bins=40, window_type="rectangular", preemphasis_coefficient=0.0, remove_dc_offset=False),
    dict(num_mel_bins=128, window_type="blackman", low_freq=50.0, high_freq=-400.0),
    dict(num_mel_bins=23, window_type="hanning", round_to_power_of_two=False),
    dict(num_mel_bins=128, window_type="hanning", sample_frequency=32000.0),
]


@pytest.mark.parametrize("amplitude", [0.3, 1.0, 1e-3])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_matches_torchaudio(settings, amplitude):
    gen = torch.Generator().manual_seed(0)
    wav = amplitude * torch.randn(3, 24000, generator=gen)
    wav[1] = amplitude * torch.sin(torch.arange(24000) * 0.05)  # a tone: some bins near zero energy
    ours = KaldiFbank(**settings)(wav)
    ref = _reference(wav, **settings)
    assert ours.shape == ref.shape
    assert ours.dtype == torch.float32
    assert (ours - ref).abs().max().item() <= 1e-4


def test_ten_second_clips_match_to_1e_4():
    gen = torch.Generator().manual_seed(1)
    wav = 0.3 * torch.randn(4, 160000, generator=gen)
    ours = KaldiFbank(num_mel_bins=128)(wav)
    ref = _reference(wav, num_mel_bins=128, window_type="hanning")
    assert ours.shape == (4, 998, 128)
    assert (ours - ref).abs().max().item() <= 1e-4


def test_mel_banks_equal_torchaudio():
    ours = kaldi_mel_banks(128, 512, 16000.0, 20.0, 0.0)
    ref, _ = ta_kaldi.get_mel_banks(128, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    assert ours.shape == (257, 128)
    assert torch.equal(ours[:-1], ref.T) and torch.equal(ours[-1], torch.zeros(128))


@pytest.mark.parametrize("n_samples", [400, 401, 559, 560, 16000, 80000, 160000, 192000])
def test_n_frames(n_samples):
    fb = KaldiFbank()
    ref = ta_kaldi.fbank(torch.zeros(1, n_samples), dither=0.0, window_type="hanning")
    assert fb.n_frames(n_samples) == ref.shape[0]
    assert fb(torch.zeros(1, n_samples)).shape[1] == ref.shape[0]


def test_chunking_does_not_change_the_result():
    wav = torch.randn(5, 20000, generator=torch.Generator().manual_seed(2))
    whole = KaldiFbank(chunk_frames=None)(wav)
    for chunk in (1, 150, 10_000):
        assert torch.equal(KaldiFbank(chunk_frames=chunk)(wav), whole)


def test_filters_stay_float32_when_the_module_is_cast():
    fb = KaldiFbank()
    wav = torch.randn(2, 8000, generator=torch.Generator().manual_seed(3))
    before = fb(wav)
    fb.half()
    assert fb.mel_banks.dtype == torch.float32
    assert torch.equal(fb(wav), before)


def test_pickle_and_deepcopy_round_trip():
    fb = KaldiFbank(num_mel_bins=64)
    wav = torch.randn(1, 4000, generator=torch.Generator().manual_seed(4))
    out = fb(wav)
    for other in (pickle.loads(pickle.dumps(fb)), copy.deepcopy(fb)):
        assert torch.equal(other(wav), out)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(window_type="kaiser"), "window_type"),
        (dict(num_mel_bins=3), "num_bins"),
        (dict(low_freq=9000.0), "low_freq"),
        (dict(chunk_frames=0), "chunk_frames"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KaldiFbank(**kwargs)


def test_bad_input():
    fb = KaldiFbank()
    with pytest.raises(ValueError, match="2-D"):
        fb(torch.zeros(400))
    with pytest.raises(ValueError, match="at least 400 samples"):
        fb(torch.zeros(1, 399))


def _official_pipeline(wav: torch.Tensor, target: int, mean: float, std: float) -> torch.Tensor:
    """Audio-MAE / EAT data loader: mean removal, fbank, ZeroPad2d or crop, normalisation."""
    out = []
    for w in wav:
        w = (w - w.mean())[None]
        fbank = ta_kaldi.fbank(
            w, htk_compat=True, sample_frequency=16000, use_energy=False,
            window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10,
        )
        p = target - fbank.shape[0]
        if p > 0:
            fbank = torch.nn.ZeroPad2d((0, 0, 0, p))(fbank)
        elif p < 0:
            fbank = fbank[:target]
        out.append((fbank - mean) / (std * 2))
    return torch.stack(out)


@pytest.mark.parametrize("seconds, raw_frames", [(5.0, 498), (10.0, 998), (12.0, 1198)])
def test_normalized_fbank_matches_the_official_loader(seconds, raw_frames):
    gen = torch.Generator().manual_seed(5)
    wav = 0.2 * torch.randn(2, int(seconds * 16000), generator=gen) + 0.05  # a DC offset to remove
    front = NormalizedFbank(target_frames=1024, norm_mean=-4.268, norm_std=4.569)
    assert front.n_frames(wav.shape[1]) == raw_frames
    ours = front(wav)
    ref = _official_pipeline(wav, 1024, -4.268, 4.569)
    assert ours.shape == ref.shape == (2, 1024, 128)
    assert (ours - ref).abs().max().item() <= 1e-4
    if raw_frames < 1024:  # padded with log-mel zeros, then normalised
        assert torch.allclose(ours[:, raw_frames:], torch.full_like(ours[:, raw_frames:], 4.268 / (2 * 4.569)))


def test_normalized_fbank_scaling_and_errors():
    wav = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(6))
    scaled = NormalizedFbank(target_frames=98, waveform_scale=32768.0)(wav)
    plain = NormalizedFbank(target_frames=98)(wav * 32768.0)
    assert torch.allclose(scaled, plain)
    with pytest.raises(ValueError, match="target_frames"):
        NormalizedFbank(target_frames=0)
    with pytest.raises(ValueError, match="norm_std"):
        NormalizedFbank(norm_std=0.0)
    with pytest.raises(ValueError, match="2-D"):
        NormalizedFbank()(torch.zeros(16000))


def test_autocast_does_not_lower_the_precision():
    wav = 0.3 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(7))
    fb = KaldiFbank()
    plain = fb(wav)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = fb(wav)
    assert cast.dtype == torch.float32 and torch.equal(cast, plain)
