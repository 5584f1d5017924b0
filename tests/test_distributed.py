"""Extraction and model selection on a real Dask LocalCluster (two worker processes)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

distributed = pytest.importorskip("distributed")

import joblib  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold  # noqa: E402

from skprobe import FrozenEncoderTransformer, LinearProbeClassifier  # noqa: E402
from skprobe.cli import main  # noqa: E402
from skprobe.distributed import ClusterSetupError, extract  # noqa: E402
from skprobe.encoders import EncoderSpec, register_encoder  # noqa: E402
from skprobe.encoders.models.tiny import TinyTransformerEncoder  # noqa: E402

ENCODER = {"encoder": "tiny-vit", "batch_size": 8}
N_CLIPS = 200


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """200 one-second noise clips of different loudness, as 16-bit WAV files."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N_CLIPS):
        path = folder / f"clip{i:03d}.wav"
        sf.write(path, (0.05 + 0.002 * i) * rng.standard_normal(16000).astype(np.float32), 16000, subtype="PCM_16")
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory):
    """Tokens of the single-process, single-machine path (same store format, float16)."""
    store = tmp_path_factory.mktemp("reference-store")
    return np.asarray(FrozenEncoderTransformer(**ENCODER, store=str(store), output="memmap").fit_transform(clips))


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


class CrashingEncoder(TinyTransformerEncoder):
    """tiny-vit whose worker process exits hard on the batch that holds a marked clip.

    The marker file holds the clip's first samples; the first worker to rename it
    (atomically) exits, so the rerun of its chunk runs through.
    """

    marker: Path | None = None

    def forward_layers(self, wav, layers):
        marker = CrashingEncoder.marker
        if marker is not None and marker.exists():
            start = np.load(marker)
            if any(np.allclose(row[: len(start)], start, rtol=0, atol=1e-7) for row in wav.cpu().numpy()):
                try:
                    os.rename(marker, marker.with_name("claimed.npy"))
                except OSError:  # another worker claimed it first
                    pass
                else:
                    os._exit(17)
        return super().forward_layers(wav, layers)


def _register_crashing_encoder(marker: str) -> None:
    """Run on each worker: the same weights as tiny-vit under another name, armed with ``marker``."""
    CrashingEncoder.marker = Path(marker)
    register_encoder(EncoderSpec(name="test-crashing-vit", builder=CrashingEncoder, sample_rate=16000,
                                 clip_seconds=1.0, requires_checkpoint=False), overwrite=True)


def _count_encoder_loads():
    """Run on each worker: wrap load_encoder with a counter (kept in the worker process)."""
    from skprobe.extraction import encoder_cache as transformer

    if not hasattr(transformer, "_test_loads"):
        real = transformer.load_encoder
        transformer._test_loads = [0]

        def counting(*args, **kwargs):
            transformer._test_loads[0] += 1
            return real(*args, **kwargs)

        transformer.load_encoder = counting
    transformer.clear_encoder_cache()
    transformer._test_loads[0] = 0


def _encoder_loads():
    from skprobe.extraction import encoder_cache as transformer

    return transformer._test_loads[0]


def test_two_workers_give_the_single_process_tokens_and_load_the_encoder_once_each(client, clips, reference,
                                                                                   tmp_path):
    client.run(_count_encoder_loads)
    from skprobe.distributed import _worker

    client.run(_worker._TRANSFORMERS.clear)  # workers may have built a transformer in an earlier test
    tokens, report = extract(clips, tmp_path / "store", client=client, chunk_size=25, return_report=True, **ENCODER)
    assert tokens.shape == reference.shape == (N_CLIPS, 97, 16)
    np.testing.assert_array_equal(np.asarray(tokens), reference)
    assert report.n_clips == N_CLIPS and report.n_forwarded == N_CLIPS and report.n_chunks == 8
    loads = client.run(_encoder_loads)
    assert set(report.chunks_per_worker) <= set(loads)
    for worker, n_chunks in report.chunks_per_worker.items():
        assert n_chunks >= 1 and loads[worker] == 1, (report.chunks_per_worker, loads)
    # the scheduler saw chunk descriptions (paths) and summaries (32-byte clip keys), never tokens
    assert report.task_bytes < 200 * N_CLIPS < 0.1 * report.bytes_written

    again, rerun = extract(clips, tmp_path / "store", client=client, chunk_size=40, return_report=True, **ENCODER)
    assert rerun.n_forwarded == 0  # a second run encodes nothing
    assert sum(client.run(_encoder_loads).values()) == len(report.chunks_per_worker)  # no reload either
    np.testing.assert_array_equal(np.asarray(again), reference)


def test_a_worker_killed_mid_chunk_keeps_committed_tokens(client, clips, reference, tmp_path):
    # The worker running chunk 1 (clips 25-49) commits two batches of 8, then dies on the batch holding clip 41.
    marker = tmp_path / "crash.npy"
    np.save(marker, sf.read(clips[41], dtype="float32")[0][:64])
    client.run(_register_crashing_encoder, str(marker))
    params = dict(ENCODER, encoder="test-crashing-vit")
    tokens, report = extract(clips, tmp_path / "store", client=client, chunk_size=25, return_report=True, **params)
    assert not marker.exists() and marker.with_name("claimed.npy").exists()  # it did crash
    assert report.n_forwarded == N_CLIPS - 16  # the rerun of chunk 1 skipped what was committed
    np.testing.assert_array_equal(np.asarray(tokens), reference)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the dead worker


def test_grid_search_on_the_cluster_matches_one_process(client, clips, tmp_path):
    tokens = extract(clips[:90], tmp_path / "store", client=client, chunk_size=30, **ENCODER)
    y = np.arange(90) // 30  # three loudness classes (the clips grow louder with their index)
    # a store-backed array pickles as the store's description and its clip keys, not the tokens
    assert len(pickle.dumps(tokens)) < 32 * len(tokens) + 2000 < 0.02 * tokens.nbytes
    search = GridSearchCV(LinearProbeClassifier(prefix_tokens=1, max_iter=5, random_state=0),
                          {"pooling": ["mean", "max"], "learning_rate": [1e-3, 1e-2]}, cv=KFold(3, shuffle=True, random_state=0))
    local = clone(search).fit(np.asarray(tokens), y)
    with joblib.parallel_backend("dask"), distributed.get_task_stream(client) as stream:
        remote = clone(search).set_params(n_jobs=-1).fit(tokens, y)
    assert sum("fit_and_score" in task["key"] for task in stream.data) >= 4  # the folds ran on the workers
    assert remote.best_params_ == local.best_params_
    np.testing.assert_allclose(remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"],
                               atol=1e-6)
    np.testing.assert_allclose(remote.cv_results_["split0_test_score"], local.cv_results_["split0_test_score"],
                               atol=1e-6)


def test_unreachable_scheduler_is_named(clips, tmp_path):
    with pytest.raises(ClusterSetupError, match=r"could not reach the Dask scheduler at tcp://127\.0\.0\.1:9"):
        extract(clips[:2], tmp_path / "store", client="tcp://127.0.0.1:9", connect_timeout=1, **ENCODER)


def test_store_a_worker_cannot_write_names_worker_and_folder(client, clips, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(ClusterSetupError, match=r"worker tcp://.* cannot write the token store folder .*not-a-folder"):
        extract(clips[:2], blocker / "store", client=client, **ENCODER)


def test_checkpoint_missing_on_a_worker_names_worker_and_path(client, clips, tmp_path):
    missing = tmp_path / "weights" / "model.safetensors"
    with pytest.raises(ClusterSetupError, match=r"worker tcp://.*checkpoint .*not found: .*model\.safetensors"):
        extract(clips[:2], tmp_path / "store", client=client, checkpoint=missing, **ENCODER)


def test_waveforms_are_refused_with_a_reason(client, tmp_path):
    with pytest.raises(ValueError, match=r"X\[0\] is a ndarray: distributed extraction takes audio file paths"):
        extract([np.zeros(16000, np.float32)], tmp_path / "store", client=client, **ENCODER)


def test_cli_extract_on_a_scheduler(client, clips, reference, tmp_path, capsys):
    folder = os.path.dirname(clips[0])
    store = tmp_path / "store"
    args = ["extract", "--dataset", folder, "--encoder", "tiny-vit", "--batch-size", "8", "--store", str(store), "-q"]
    assert main([*args, "--scheduler", client.scheduler.address]) == 0
    assert f"{N_CLIPS} files -> {store}: {N_CLIPS} encoded, 0 already stored" in capsys.readouterr().out
    tokens = FrozenEncoderTransformer(**ENCODER, store=str(store), output="memmap").fit_transform(clips)
    np.testing.assert_array_equal(np.asarray(tokens), reference)

    assert main([*args, "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "could not reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err


def test_cli_cluster_options_are_checked(clips, tmp_path, capsys):
    folder = os.path.dirname(clips[0])
    base = ["extract", "--dataset", folder, "--encoder", "tiny-vit", "--store", str(tmp_path / "store")]
    assert main([*base, "--workers", "0"]) == 2
    assert "n_workers must be >= 1, got 0" in capsys.readouterr().err
    assert main([*base, "--workers", "1", "-o", str(tmp_path / "x.npz")]) == 2
    assert "--output is not used with --scheduler/--workers" in capsys.readouterr().err
    assert main(["extract", "--dataset", clips[0], "--workers", "1"]) == 2
    assert "extract a folder of audio files; --dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--workers", "1", "--scheduler", "tcp://127.0.0.1:9"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_bad_file_names_worker_and_file_and_keeps_the_other_chunks(client, clips, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    files = [*clips[:8], str(bad), *clips[8:10]]
    with pytest.raises(ValueError, match=r"worker tcp://.*, chunk 2 .*broken\.wav"):
        extract(files, tmp_path / "store", client=client, chunk_size=4, retries=0, **ENCODER)
    _, report = extract(clips[:8], tmp_path / "store", client=client, chunk_size=4, return_report=True, **ENCODER)
    assert report.n_forwarded == 0  # chunks 0 and 1 were committed before the error surfaced


def test_workers_undo_dasks_malloc_trim_threshold(client, clips, tmp_path):
    """Dask's MALLOC_TRIM_THRESHOLD_=65536 made torch CPU forwards 2.5x slower (docs/benchmarks/distributed.md)."""
    from skprobe.distributed import _worker

    extract(clips[:4], tmp_path / "store", client=client, chunk_size=2, **ENCODER)
    state = client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), _worker.worker_stats()["malloc_tuned"]))
    assert len(state) == 2
    assert set(state.values()) == {("65536", True)}  # Dask's variable is there, and each worker overrode it


@pytest.mark.slow
def test_cli_bad_file_on_a_local_cluster_prints_one_line(clips, tmp_path):
    """Issue 19, item 13: the workers' task tracebacks and the nannies' warnings stay out of the command's output."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    folder = tmp_path / "clips"
    folder.mkdir()
    for path in clips[:4]:
        shutil.copy(path, folder)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "CUDA_VISIBLE_DEVICES": "",
           "SKPROBE_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "skprobe", "extract", "--encoder", "tiny-vit", "--dataset",
                           str(folder), "--workers", "2", "--store", str(tmp_path / "store"), "-q"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("skprobe: error: worker tcp://") and "broken.wav" in lines[0]
