"""Audio input helpers: file reading, down-mixing, PCM scaling, resampling, length fixing."""

import numpy as np
import pytest
import soundfile as sf
import torch

from skprobe.audio import fix_length, read_audio, resample, to_mono_float


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _pcm16(rng, n, channels=None):
    shape = (n,) if channels is None else (n, channels)
    return rng.integers(-32768, 32767, size=shape, endpoint=True).astype(np.int16)


# -- read_audio ------------------------------------------------------------------------


def test_read_int16_wav_is_scaled_exactly(tmp_path, rng):
    pcm = _pcm16(rng, 1000)
    pcm[:2] = [-32768, 32767]
    path = tmp_path / "int16.wav"
    sf.write(path, pcm, 22050, subtype="PCM_16")
    wav, sr = read_audio(path)
    assert sr == 22050
    assert wav.dtype == np.float32 and wav.shape == (1000,)
    np.testing.assert_array_equal(wav, pcm.astype(np.float32) / 32768)
    assert wav[0] == -1.0 and wav.max() < 1.0


def test_read_float_wav_keeps_values(tmp_path, rng):
    data = (0.3 * rng.standard_normal(500)).astype(np.float32)
    path = tmp_path / "float.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    wav, sr = read_audio(str(path))  # str paths work too
    assert sr == 16000
    np.testing.assert_array_equal(wav, data)


def test_read_stereo_wav_is_downmixed(tmp_path, rng):
    pcm = _pcm16(rng, 800, channels=2)
    path = tmp_path / "stereo.wav"
    sf.write(path, pcm, 44100, subtype="PCM_16")
    wav, sr = read_audio(path)
    assert sr == 44100 and wav.shape == (800,)
    np.testing.assert_allclose(wav, pcm.astype(np.float64).mean(axis=1) / 32768, atol=1e-7)


def test_read_flac(tmp_path, rng):
    pcm = _pcm16(rng, 1200)
    path = tmp_path / "clip.flac"
    sf.write(path, pcm, 16000, subtype="PCM_16")
    wav, sr = read_audio(path)
    assert sr == 16000
    np.testing.assert_array_equal(wav, pcm.astype(np.float32) / 32768)  # FLAC is lossless


def test_read_with_resampling(tmp_path):
    t = np.arange(44100) / 44100
    path = tmp_path / "tone.wav"
    sf.write(path, 0.5 * np.sin(2 * np.pi * 440 * t), 44100, subtype="FLOAT")
    wav, sr = read_audio(path, sample_rate=16000)
    assert sr == 16000 and wav.shape == (16000,) and wav.dtype == np.float32
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    np.testing.assert_allclose(wav[200:-200], expected[200:-200], atol=5e-3)
    same, sr_same = read_audio(path, sample_rate=44100)
    assert sr_same == 44100 and same.shape == (44100,)


def test_read_missing_file_names_it(tmp_path):
    path = tmp_path / "nowhere.wav"
    with pytest.raises(ValueError, match="cannot read audio file .*nowhere.wav"):
        read_audio(path)


def test_read_garbage_file_names_it(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(ValueError, match="cannot read audio file .*garbage.wav"):
        read_audio(path)


def test_read_empty_file_names_it(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")
    with pytest.raises(ValueError, match="empty.wav is empty"):
        read_audio(path)


# -- to_mono_float ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, values, expected",
    [
        (np.int16, [-32768, 0, 16384], [-1.0, 0.0, 0.5]),
        (np.int32, [-(2**31), 2**30, 0], [-1.0, 0.5, 0.0]),
        (np.int8, [-128, 64, 0], [-1.0, 0.5, 0.0]),
        (np.uint8, [0, 128, 192], [-1.0, 0.0, 0.5]),  # unsigned 8-bit PCM is offset
        (np.float64, [0.25, -0.5, 0.0], [0.25, -0.5, 0.0]),
    ],
)
def test_to_mono_float_scales_pcm(dtype, values, expected):
    out = to_mono_float(np.array(values, dtype=dtype))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.float32))


def test_to_mono_float_downmixes_both_layouts(rng):
    stereo = rng.standard_normal((100, 2)).astype(np.float32)
    np.testing.assert_allclose(to_mono_float(stereo), stereo.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(to_mono_float(stereo.T), stereo.mean(axis=1), rtol=1e-6)


def test_to_mono_float_downmixes_integer_stereo(rng):
    pcm = _pcm16(rng, 50, channels=2)
    np.testing.assert_allclose(to_mono_float(pcm), pcm.mean(axis=1) / 32768, atol=1e-7)


@pytest.mark.parametrize(
    "wav, message",
    [
        (np.zeros((2, 3, 4)), "clip must be 1-D .* got shape \\(2, 3, 4\\)"),
        (np.zeros(0), "clip is empty"),
        (np.zeros((0, 2)), "clip is empty"),
        (np.array([0.0, np.nan, 0.1]), "clip contains NaN or infinite"),
        (np.array([0.0, np.inf]), "clip contains NaN or infinite"),
        (np.array([[0.0, np.nan], [0.1, 0.2], [0.3, 0.4]]), "clip contains NaN"),
    ],
)
def test_to_mono_float_errors_name_the_input(wav, message):
    with pytest.raises(ValueError, match=message):
        to_mono_float(wav, name="clip")


# -- resample --------------------------------------------------------------------------


def test_resample_tone_matches_analytic_signal():
    f = 1000.0
    x = np.sin(2 * np.pi * f * np.arange(44100) / 44100).astype(np.float32)
    y = resample(x, 44100, 16000)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (16000,)
    expected = np.sin(2 * np.pi * f * np.arange(16000) / 16000)
    np.testing.assert_allclose(y[100:-100], expected[100:-100], atol=2e-3)


def test_resample_upsampling_and_lengths():
    x = np.random.default_rng(0).standard_normal(8001).astype(np.float32)
    assert resample(x, 8000, 16000).shape == (16002,)
    assert resample(x, 16000, 8000).shape == (4001,)  # ceil(n * new / orig)


def test_resample_tensor_in_tensor_out_and_batched():
    x = torch.randn(3, 4410)
    y = resample(x, 44100, 16000)
    assert isinstance(y, torch.Tensor) and y.shape == (3, 1600)
    np.testing.assert_allclose(y[1].numpy(), resample(x[1].numpy(), 44100, 16000), atol=1e-6)


def test_resample_same_rate_is_identity():
    x = np.arange(10, dtype=np.float32)
    assert resample(x, 16000, 16000) is x


@pytest.mark.parametrize("rates", [(0, 16000), (16000, -1)])
def test_resample_rejects_bad_rates(rates):
    with pytest.raises(ValueError, match="sample rates must be positive"):
        resample(np.zeros(10, np.float32), *rates)


# -- fix_length ------------------------------------------------------------------------


def test_fix_length_crops_keeping_the_start():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(x, 4), [0, 1, 2, 3])


def test_fix_length_pads_zeros_at_the_end():
    x = np.arange(1, 4, dtype=np.float32)
    out = fix_length(x, 6)
    np.testing.assert_array_equal(out, [1, 2, 3, 0, 0, 0])
    assert out.dtype == np.float32


def test_fix_length_exact_and_batched():
    x = np.ones((2, 5), dtype=np.float32)
    np.testing.assert_array_equal(fix_length(x, 5), x)
    assert fix_length(x, 7).shape == (2, 7)
    np.testing.assert_array_equal(fix_length(x, 7)[:, 5:], 0)
    assert fix_length(x, 3).shape == (2, 3)
