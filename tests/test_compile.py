"""FrozenEncoderTransformer(compile=True): the encoder's forward through torch.compile at one batch shape."""

import pickle

import numpy as np
import pytest
import torch

from skprobe import FrozenEncoderTransformer
from skprobe.extraction import compiled
from skprobe.extraction.transformer import clear_encoder_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


def _clips(n: int, seconds: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32) for _ in range(n)]


@pytest.fixture
def fresh_graphs():
    """No compiled forward or dynamo cache left over from another test, before or after."""
    compiled._COMPILED.clear()
    clear_encoder_cache()
    torch._dynamo.reset()
    yield
    compiled._COMPILED.clear()
    clear_encoder_cache()
    torch._dynamo.reset()


class _Graphs(list):
    """Input shapes of each captured graph; ``modes``: the ``mode`` of each torch.compile call."""

    modes: list


@pytest.fixture
def counted_graphs(monkeypatch, fresh_graphs):
    """torch.compile with a backend that runs each captured graph eagerly and records it (no code generation)."""
    graphs = _Graphs()

    def backend(gm, example_inputs):
        graphs.append(tuple(tuple(x.shape) for x in example_inputs if isinstance(x, torch.Tensor)))
        return gm.forward

    real = torch.compile

    def compile(fn, **kw):
        modes.append(kw.get("mode"))
        return real(fn, backend=backend, dynamic=kw.get("dynamic"))

    modes = []
    monkeypatch.setattr(torch, "compile", compile)
    graphs.modes = modes
    return graphs


def test_compiled_forward_pads_the_last_batch_and_compiles_once(counted_graphs):
    params = dict(encoder="tiny-vit", layers=[0, 2], batch_size=2, device="cpu")
    X = _clips(5)
    eager = FrozenEncoderTransformer(**params).fit_transform(X)
    enc = FrozenEncoderTransformer(compile=True, **params)
    first = enc.fit_transform(X[:4])  # two full batches: compiles
    n_graphs = len(counted_graphs)
    assert n_graphs >= 1
    out = enc.transform(X)  # a last batch of one clip, padded to two: no new graph
    assert len(counted_graphs) == n_graphs
    assert all(shape[0] == 2 for graph in counted_graphs for shape in graph[:1])  # compiled at the batch size
    np.testing.assert_allclose(out, eager, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(out[:4], first)


def test_a_batch_larger_than_the_compiled_one_is_refused(fresh_graphs):
    encoder = FrozenEncoderTransformer(encoder="tiny-vit", device="cpu").fit(None)._load(torch.device("cpu"))
    forward = compiled.compiled_forward(encoder, [0], batch_size=2)
    with pytest.raises(ValueError, match="3 clips is larger than the compiled batch_size=2"):
        forward(torch.zeros(3, 16000))
    assert compiled.compiled_forward(encoder, [0], batch_size=2) is forward  # kept per encoder, layers, batch
    assert compiled.compiled_forward(encoder, [0], batch_size=4) is not forward


def test_compile_shares_the_store_of_the_eager_forward(tmp_path):
    eager = FrozenEncoderTransformer(encoder="tiny-vit", device="cpu", store=tmp_path).fit(None)
    compiled_enc = FrozenEncoderTransformer(encoder="tiny-vit", device="cpu", store=tmp_path, compile=True).fit(None)
    assert compiled_enc.open_store().folder == eager.open_store().folder


def test_a_compile_mode_reaches_torch_compile(counted_graphs):
    params = dict(encoder="tiny-vit", batch_size=2, device="cpu")
    eager = FrozenEncoderTransformer(**params).fit_transform(_clips(2))
    out = FrozenEncoderTransformer(compile="max-autotune-no-cudagraphs", **params).fit_transform(_clips(2))
    FrozenEncoderTransformer(compile=True, layers=[0], **params).fit_transform(_clips(2))
    assert counted_graphs.modes == ["max-autotune-no-cudagraphs", None]
    np.testing.assert_allclose(out, eager, atol=1e-5, rtol=1e-5)


def test_compile_is_validated_and_old_pickles_load():
    with pytest.raises(ValueError, match="'compile' parameter .* must be .*reduce-overhead"):
        FrozenEncoderTransformer(compile="yes").fit(None)
    state = FrozenEncoderTransformer(encoder="tiny-vit").__getstate__()
    del state["compile"]  # as pickled before the parameter existed
    old = FrozenEncoderTransformer.__new__(FrozenEncoderTransformer)
    old.__setstate__(state)
    assert old.get_params()["compile"] is False
    assert pickle.loads(pickle.dumps(old)).compile is False


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex operators")
def test_inductor_tokens_match_the_eager_forward(device, fresh_graphs):
    # float32 on the CPU: the generated kernels reorder sums (rounding only); bfloat16 autocast on CUDA:
    # 8 bits of mantissa, as between batch sizes (tests/test_transformer.py)
    tol = dict(atol=1e-4, rtol=1e-4) if device == "cpu" else dict(atol=3e-2, rtol=3e-2)
    params = dict(encoder="tiny-vit", layers=[0, 2], batch_size=2, device=device)
    X = _clips(3)
    eager = FrozenEncoderTransformer(**params).fit_transform(X)
    out = FrozenEncoderTransformer(compile=True, **params).fit_transform(X)
    np.testing.assert_allclose(out, eager, **tol)


def test_cli_extract_with_compile_gives_the_eager_tokens(counted_graphs, tmp_path, monkeypatch):
    import soundfile as sf

    from skprobe.cli import main

    folder = tmp_path / "clips"
    folder.mkdir()
    rows = ["file,labels"]
    for i, wav in enumerate(_clips(8)):
        sf.write(folder / f"c{i}.wav", (wav * 20000).astype(np.int16), 16000)
        rows.append(f"c{i}.wav,{'ab'[i % 2]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    outputs = {}
    for flag in ([], ["--compile"]):
        path = tmp_path / f"tokens{len(flag)}.npz"
        monkeypatch.setenv("SKPROBE_HOME", str(tmp_path / f"home{len(flag)}"))  # a token store each: both encode
        assert main(["extract", "--encoder", "tiny-vit", "--dataset", str(folder), "-o", str(path), "--quiet",
                     "--device", "cpu", "--batch-size", "4", *flag]) == 0
        outputs[bool(flag)] = dict(np.load(path))
        assert bool(counted_graphs) == bool(flag)  # the second run went through torch.compile
    for name, eager in outputs[False].items():
        np.testing.assert_array_equal(outputs[True][name], eager)


@pytest.mark.parametrize(("argv", "expected"), [([], False), (["--compile"], True),
                                                (["--compile", "reduce-overhead"], "reduce-overhead")])
def test_cli_compile_option_reaches_the_config(argv, expected):
    from skprobe.cli import _config, build_parser

    args = build_parser().parse_args(["benchmark", "--encoder", "tiny-vit", *argv])
    assert _config(args).compile == expected


def test_cli_compile_mode_is_checked(capsys):
    from skprobe.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["extract", "--compile", "fast"])
    assert "invalid choice: 'fast'" in capsys.readouterr().err
