"""Token extraction and probe grid search on a Dask cluster, with the tokens read from the store.

Writes the clips as WAV files (workers read files, not arrays), extracts their
token maps on a LocalCluster of two worker processes into a token store, then
grid-searches a probe under ``joblib.parallel_backend("dask")``. The tokens go
to GridSearchCV as a store-backed array whose pickle holds the store's
description and the clip keys only: every worker reads its folds from the
store instead of receiving token arrays through the scheduler. On a real
cluster, replace the LocalCluster by ``Client("tcp://scheduler:8786")`` (or a
``dask_jobqueue.SLURMCluster``) and put the files and the store on a shared
filesystem.

    python examples/distributed_grid_search.py            # YAMNet on the event scenes
    python examples/distributed_grid_search.py --quick    # tiny random encoder on synthetic audio (seconds)
"""

import argparse
import tempfile
from pathlib import Path

import joblib
import numpy as np
import soundfile as sf
from distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV, KFold

from skprobe import PrototypicalProbeClassifier
from skprobe.datasets import make_click_waveforms
from skprobe.distributed import extract
from skprobe.metrics import get_scorer, macro_map


def load(quick: bool):
    """Waveforms, multi-label targets, the encoder name and extra probe parameters."""
    if quick:
        wavs, Y = make_click_waveforms(60, 3)  # class j: a click train of its own period
        return wavs, Y, 40, "tiny-cnn", 16000, {"max_iter": 5}
    from skprobe import fetch_weights
    from skprobe.datasets import make_event_scenes

    fetch_weights("yamnet")
    data = make_event_scenes()
    wavs = np.concatenate([data.X_train, data.X_test])
    Y = np.concatenate([data.Y_train, data.Y_test])
    return wavs, Y, len(data.X_train), "yamnet", data.sample_rate, {}


def main(quick: bool = False) -> float:
    wavs, Y, n_train, encoder, rate, extra = load(quick)
    with tempfile.TemporaryDirectory() as tmp, \
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        files = []
        for i, wav in enumerate(wavs):
            files.append(Path(tmp) / f"clip{i:05d}.wav")
            sf.write(files[-1], wav, rate)
        # Two calls on one cluster; each returns a store-backed array in the order of its files.
        X_train, report = extract(files[:n_train], Path(tmp) / "store", client=client, chunk_size=16,
                                  encoder=encoder, return_report=True)
        X_test = extract(files[n_train:], Path(tmp) / "store", client=client, chunk_size=16, encoder=encoder)
        print(f"{report.n_clips} train clips on {len(report.chunks_per_worker)} workers in {report.seconds:.1f} s; "
              f"{report.task_bytes / 1e3:.1f} kB through the scheduler, {report.bytes_written / 1e6:.1f} MB of "
              "tokens written to the store")
        search = GridSearchCV(
            PrototypicalProbeClassifier(prefix_tokens=0, random_state=0, **extra),  # both encoders are CNNs
            {"n_prototypes_per_class": [5, 20], "learning_rate": [5e-3, 2e-2]},
            scoring=get_scorer("macro_map"), cv=KFold(3, shuffle=True, random_state=0), n_jobs=-1,
        )
        with joblib.parallel_backend("dask"):  # the client above is the default: candidates x folds run there
            search.fit(X_train, Y[:n_train])
        test = macro_map(Y[n_train:], search.decision_function(np.asarray(X_test)))
    print(f"best {search.best_params_}: CV macro mAP {search.best_score_:.3f}, test macro mAP {test:.3f}")
    return test


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny encoder and synthetic audio")
    main(parser.parse_args().quick)
