"""transformers backend: tiny random models saved with save_pretrained, loaded offline.

Each family's tokens are compared with the HF model's own ``hidden_states`` on
the HF feature extractor's output, and each batched front end with the HF
feature extractor itself.
"""

import sys

import numpy as np
import pytest
import torch

from skprobe.encoders import get_encoder_spec, load_encoder

tf = pytest.importorskip("transformers")

SR = 16000
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
W2V_TINY = dict(
    TINY, conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=8
)


def _wav(seconds: float, batch: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tone = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000, (batch, 1)) * t)
    return (tone + 0.05 * rng.standard_normal((batch, t.size))).astype(np.float32)


def _save(model, fe, folder):
    model.save_pretrained(folder)
    if fe is not None:
        fe.save_pretrained(folder)
    return folder


def _ast(tmp_path):
    torch.manual_seed(0)
    cfg = tf.ASTConfig(**TINY, num_mel_bins=64, max_length=200)
    fe = tf.ASTFeatureExtractor(num_mel_bins=64, max_length=200)
    return _save(tf.ASTModel(cfg), fe, tmp_path / "ast"), fe


def _w2v(tmp_path, family, stable, do_normalize):
    torch.manual_seed(1)
    cfg_cls, model_cls = {
        "wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
        "hubert": (tf.HubertConfig, tf.HubertModel),
        "wavlm": (tf.WavLMConfig, tf.WavLMModel),
    }[family]
    cfg = cfg_cls(**W2V_TINY, do_stable_layer_norm=stable, feat_extract_norm="layer" if stable else "group")
    fe = None if do_normalize is None else tf.Wav2Vec2FeatureExtractor(do_normalize=do_normalize)
    folder = _save(model_cls(cfg), fe, tmp_path / family)
    return folder, fe or tf.Wav2Vec2FeatureExtractor()


def _whisper(tmp_path):
    torch.manual_seed(2)
    cfg = tf.WhisperConfig(
        d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=64, max_target_positions=16, num_mel_bins=80,
        pad_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2,
    )
    fe = tf.WhisperFeatureExtractor(feature_size=80)
    return _save(tf.WhisperModel(cfg), fe, tmp_path / "whisper"), fe


def _check_layers(enc, reference_states, last_hidden, wav, n_time=None):
    x = torch.from_numpy(wav)
    n = enc.n_layers
    with torch.inference_mode():
        all_layers = enc.forward_layers(x, list(range(n)))
        first_only = enc.forward_layers(x, [0])[0]  # truncated run: stops after block 0
    for layer, tokens in enumerate(all_layers):
        # Block outputs; the last layer is last_hidden_state (final norm included), which is
        # hidden_states[-1] in some transformers releases and not in others.
        ref = reference_states[layer + 1] if layer < n - 1 else last_hidden
        lay = enc.layout(x.shape[1], layer)
        assert tokens.shape == (x.shape[0], lay.n_tokens, lay.dim)
        torch.testing.assert_close(tokens, ref[:, :n_time], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first_only, all_layers[0], atol=1e-5, rtol=1e-5)


def test_ast_matches_hf(tmp_path):
    folder, fe = _ast(tmp_path)
    enc = load_encoder("hf-ast", checkpoint=folder)
    for seconds in (1.0, 2.5):  # padded to and cut at max_length=200 frames
        wav = _wav(seconds)
        feats = fe(list(wav), sampling_rate=SR, return_tensors="pt").input_values
        with torch.inference_mode():
            torch.testing.assert_close(enc._features(torch.from_numpy(wav)), feats, atol=2e-5, rtol=1e-5)
            out = enc.model(input_values=feats, output_hidden_states=True)
        _check_layers(enc, out.hidden_states, out.last_hidden_state, wav)
    lay = enc.layout(SR, 1)
    assert (lay.prefix_tokens, lay.n_freq, lay.n_time, lay.order) == (2, 5, 19, "freq_time")
    assert lay.hop_seconds == pytest.approx(0.1)


@pytest.mark.parametrize(
    "family, stable, do_normalize",
    [("wav2vec2", False, True), ("wav2vec2", True, False), ("hubert", False, None), ("wavlm", True, True)],
)
def test_wav2vec2_family_matches_hf(tmp_path, family, stable, do_normalize):
    folder, fe = _w2v(tmp_path, family, stable, do_normalize)
    enc = load_encoder(f"hf-{family}", checkpoint=folder)
    assert enc.do_normalize == (do_normalize is not False)  # no preprocessor_config: HF default True
    wav = _wav(0.5)
    feats = fe(list(wav), sampling_rate=SR, return_tensors="pt").input_values
    with torch.inference_mode():
        torch.testing.assert_close(enc._features(torch.from_numpy(wav)), feats, atol=1e-5, rtol=1e-5)
        out = enc.model(input_values=feats, output_hidden_states=True)
    _check_layers(enc, out.hidden_states, out.last_hidden_state, wav)
    lay = enc.layout(wav.shape[1], 0)
    assert (lay.n_time, lay.n_freq, lay.prefix_tokens, lay.hop_seconds) == (24, 1, 0, 0.02)


def test_whisper_matches_hf(tmp_path):
    folder, fe = _whisper(tmp_path)
    enc = load_encoder("hf-whisper", checkpoint=folder)
    wav = _wav(1.0)
    wav[1] *= 0.1  # the log-mel floor is per clip
    feats = fe(list(wav), sampling_rate=SR, return_tensors="pt").input_features
    with torch.inference_mode():
        torch.testing.assert_close(enc._features(torch.from_numpy(wav)), feats, atol=1e-5, rtol=1e-5)
        out = enc.model(input_features=feats, output_hidden_states=True)
    _check_layers(enc, out.hidden_states, out.last_hidden_state, wav, n_time=50)
    assert enc.layout(SR, 1).n_time == 50 and enc.layout(40 * SR, 1).n_time == 1500
    assert enc.layout(SR, 1).hop_seconds == 0.02


def test_wrong_family_and_bad_folder(tmp_path):
    folder, _ = _whisper(tmp_path)
    with pytest.raises(ValueError, match="holds a 'whisper' model; encoder hf-ast expects"):
        load_encoder("hf-ast", checkpoint=folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="save_pretrained"):
        load_encoder("hf-wav2vec2", checkpoint=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="needs a local checkpoint"):
        load_encoder("hf-hubert")


def test_unloaded_module_and_missing_transformers(monkeypatch):
    enc = get_encoder_spec("hf-wavlm").builder()
    with pytest.raises(RuntimeError, match="has no weights yet"):
        enc.layout(SR, 0)
    monkeypatch.setitem(sys.modules, "transformers", None)
    from skprobe.encoders.models.hf import _transformers

    with pytest.raises(ImportError, match=r"pip install 'skprobe\[transformers\]'"):
        _transformers()


def test_specs_metadata():
    expected = {"hf-ast": (768, 12, 2), "hf-wav2vec2": (768, 12, 0), "hf-hubert": (768, 12, 0),
                "hf-wavlm": (768, 12, 0), "hf-whisper": (512, 6, 0)}
    for name, (dim, layers, prefix) in expected.items():
        spec = get_encoder_spec(name)
        assert (spec.metadata()["dim"], spec.metadata()["n_layers"], spec.metadata()["prefix_tokens"]) == (dim, layers, prefix)
        assert spec.requires_checkpoint and spec.packaged_weights is None
        assert spec.weights_source.startswith("https://huggingface.co/")
