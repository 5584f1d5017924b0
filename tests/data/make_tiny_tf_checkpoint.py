"""Regenerate the tiny TF checkpoints (needs TensorFlow; not run by the tests).

    python tests/data/make_tiny_tf_checkpoint.py   # in a venv with tensorflow-cpu

- ``tiny_tf_checkpoint/``: a two-shard ``tf.train.Checkpoint`` with one
  variable of each dtype the reader supports, one of them split into slices
  across both shards; ``tests/test_tf_checkpoint.py`` rebuilds the same values.
- ``yamnet_mismatch_tf_checkpoint/``: three YAMNet-like variables under
  ``_yamnet/`` (one of the wrong shape) and one extra one, for the loader's
  error message.
"""

import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

here = Path(__file__).parent
out = here / "tiny_tf_checkpoint"
shutil.rmtree(out, ignore_errors=True)


class Net(tf.Module):
    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(np.arange(12, dtype=np.float32).reshape(3, 4) / 8 - 0.5)
        self.bias = tf.Variable(np.array([1.5, -2.0, 3.25, 0.0], dtype=np.float32))
        self.big = tf.Variable(np.sin(np.arange(256, dtype=np.float32)).reshape(16, 16))
        self.step = tf.Variable(np.int64(-(2**40) - 7))
        self.counts = tf.Variable(np.array([-3, 0, 7, 2**31 - 1, -(2**31)], dtype=np.int32))
        self.table = tf.Variable(np.array([[np.pi, -1e300], [1e-300, 2.0]], dtype=np.float64))
        self.half = tf.Variable(tf.constant([1.0, -2.5, 3.0e38], dtype=tf.bfloat16))
        self.words = tf.Variable(tf.constant([b"alpha", b"", "b\u00e9ta".encode()]))


policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=1024)
options = tf.train.CheckpointOptions(experimental_sharding_callback=policy)
path = tf.train.Checkpoint(net=Net()).write(str(out / "ckpt"), options=options)
for name, shape in tf.train.list_variables(path):
    print(name, shape)
print(sorted(p.name for p in out.iterdir()))


mismatch = here / "yamnet_mismatch_tf_checkpoint"
shutil.rmtree(mismatch, ignore_errors=True)
yamnet = tf.Module()
layers = {0: {"kernel": np.zeros((3, 3, 1, 32), np.float32)},
          1: {"beta": np.zeros(16, np.float32), "moving_mean": np.zeros(32, np.float32),
              "moving_variance": np.ones(32, np.float32)},
          99: {"kernel": np.zeros(2, np.float32)}}
for index, variables in layers.items():
    layer = tf.Module()
    for name, value in variables.items():
        setattr(layer, name, tf.Variable(value))
    setattr(yamnet, f"layer_with_weights-{index}", layer)
path = tf.train.Checkpoint(_yamnet=yamnet).write(str(mismatch / "ckpt"))
for name, shape in tf.train.list_variables(path):
    print(name, shape)
