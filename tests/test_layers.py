"""Layer selection and the shared stop-early block loop."""

import re
import warnings

import pytest
import torch

from skprobe.encoders.layers import check_layers, conv_tokens, resolve_layers, run_blocks
from skprobe.encoders.models.asit import ASiTEncoder
from skprobe.encoders.models.audiomae import AudioMAE
from skprobe.encoders.models.beats import BEATsEncoder
from skprobe.encoders.models.crepe import CrepeTinyEncoder
from skprobe.encoders.models.dasheng import DashengEncoder
from skprobe.encoders.models.tiny import TinyConvEncoder, TinyTransformerEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    "layers, expected",
    [(None, [11]), (0, [0]), (-1, [11]), ([-1, 0, 11], [0, 11]), ((3, 1, -12), [0, 1, 3])],
)
def test_resolve_layers_timm_semantics(layers, expected):
    given = [] if layers is None or isinstance(layers, int) else [x % 12 for x in layers]
    if given and given != expected:  # reordered or repeated: said in a warning
        with pytest.warns(UserWarning, match=rf"selects layers {re.escape(str(expected))} in increasing order"):
            assert resolve_layers(layers, 12) == expected
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert resolve_layers(layers, 12) == expected


@pytest.mark.parametrize("layers", [12, -13, [0, 12], [1.5], ["a"]])
def test_resolve_layers_out_of_range(layers):
    with pytest.raises(ValueError, match=r"layers must be integers in \[-12, 11\] for this encoder, got "):
        resolve_layers(layers, 12)


def test_check_layers_keeps_the_contract():
    assert check_layers((0, 5), 6) == [0, 5]
    with pytest.raises(ValueError, match="layers must not be empty"):
        check_layers([], 6)
    with pytest.raises(ValueError, match=r"layers must be sorted and unique, got \[2, 1\]"):
        check_layers([2, 1], 6)
    with pytest.raises(ValueError, match=r"layers must be sorted and unique, got \[1, 1\]"):
        check_layers([1, 1], 6)
    with pytest.raises(ValueError, match=r"layers must be integers in \[0, 5\] for this encoder, got -1"):
        check_layers([-1], 6)


ENCODERS = [
    TinyConvEncoder,
    TinyTransformerEncoder,
    CrepeTinyEncoder,
    lambda: AudioMAE(depth=2, dim=32, num_heads=2),
    lambda: ASiTEncoder(dim=32, depth=2, num_heads=2, target_frames=160),
    lambda: DashengEncoder(dim=32, depth=2, num_heads=2),
    lambda: BEATsEncoder(dim=32, embed_dim=16, depth=2, num_heads=2, ffn_dim=64, conv_pos=8, conv_pos_groups=2),
]


@pytest.mark.parametrize("build", ENCODERS)
def test_every_architecture_rejects_a_bad_layer_with_the_same_message(build):
    enc = build().eval()
    n = enc.n_layers
    with torch.inference_mode(), pytest.raises(ValueError, match=rf"layers must be integers in \[0, {n - 1}\] "
                                                                 rf"for this encoder, got {n}$"):
        enc.forward_layers(torch.zeros(1, enc.sample_rate), [0, n])


def test_run_blocks_stops_after_the_deepest_layer():
    ran = []

    def block(k):
        def run(x):
            ran.append(k)
            return x + k

        return run

    out = run_blocks(0, [block(k) for k in range(1, 6)], [0, 2], output=lambda x, i: (i, x))
    assert out == [(0, 1), (2, 6)]
    assert ran == [1, 2, 3]


def test_conv_tokens_are_time_major():
    x = torch.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # B, C, T, F
    tokens = conv_tokens(x)
    assert tokens.shape == (2, 20, 3)
    assert torch.equal(tokens[1, 2 * 5 + 3], x[1, :, 2, 3])
